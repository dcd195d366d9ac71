# stage-values: known
stage "load" "prefs" {
  path = "/data/prefs.jsonl"
}

stage "tokenize" "tok" {
  input     = stage.load.prefs
  tokenizer = "tok.bin"
}

stage "dpo" "train" {
  input     = stage.tokenize.tok
  model     = "m.bin"
  loss      = { sigmoid = 1.0, sft = 0.1 }
  max_steps = 10
}

stage "evaluate" "eval" {
  input = stage.tokenize.tok
  model = stage.dpo.train
}
