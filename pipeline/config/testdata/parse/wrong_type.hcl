stage "load" "prefs" {
  path    = ["a.jsonl", "b.jsonl"]
  columns = { prompt = ["q"] }
  split   = { eval = "a tenth", seed = 7 }
}

stage "tokenize" "tok" {
  input      = stage.load.prefs
  tokenizer  = "tok.bin"
  max_length = "lots"
  add_bos    = "yes"
}
