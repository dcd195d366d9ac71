stage "load" "prefs" {
  path = "data/prefs.jsonl"
}

stage "tokenize" "tok" {
  input     = stage.load.pref
  tokenizer = "tok.bin"
}

stage "reference_logprobs" "ref" {
  input = stage.load.tok
  model = "m.bin"
}

stage "evaluate" "eval" {
  input = stage.tokenize.tok
  model = stage.dpo.train
}
