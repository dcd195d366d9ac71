stage "load" "prefs" {
  path = "a.jsonl"
}

stage "tokenize" "prefs" {
  input     = stage.load.prefs
  tokenizer = "tok.bin"
}

stage "load" "prefs" {
  path = "b.jsonl"
}
