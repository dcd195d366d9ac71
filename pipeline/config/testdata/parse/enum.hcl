stage "tokenize" "tok" {
  tokenizer  = "tok.bin"
  truncation = "keep_ends"
}

stage "load" "prefs" {
  path   = "p"
  format = "yaml"
}
