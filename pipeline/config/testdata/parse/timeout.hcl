variable "limit" { default = "90s" }

stage "load" "prefs" {
  path    = "p.jsonl"
  timeout = "30m"
}

stage "tokenize" "tok" {
  input     = stage.load.prefs
  tokenizer = "tok.bin"
  timeout   = var.limit
}
