stage "tokenize" "tok" {
  input = stage.load.prefs
}
