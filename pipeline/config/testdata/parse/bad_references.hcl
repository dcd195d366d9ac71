variable "beta" { default = 0.1 }

stage "load" "prefs" {
  path = "a.jsonl"
}

stage "tokenize" "tok" {
  input     = stage.load
  tokenizer = "tok.bin"
}

stage "tokenize" "tok2" {
  input     = "stage.load.prefs"
  tokenizer = stage
}

stage "tokenize" "tok3" {
  input      = stage.load.prefs.path
  tokenizer  = "tok.bin"
  max_length = var.bta * 2
  truncation = local.mode
}
