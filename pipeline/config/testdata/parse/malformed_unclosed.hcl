stage "load" "prefs" {
  path = "data/prefs.jsonl"

stage "tokenize" "tok" {
  input = stage.load.prefs
}
