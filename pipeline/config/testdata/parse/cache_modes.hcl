variable "cache" { default = "off" }

stage "load" "prefs" {
  path = "p.jsonl"
}

stage "tokenize" "tok" {
  input     = stage.load.prefs
  tokenizer = "tok.bin"
  cache {
    mode = "content"
  }
}

stage "reference_logprobs" "ref" {
  input = stage.tokenize.tok
  model = "m.bin"
  cache {
    mode = var.cache
  }
}
