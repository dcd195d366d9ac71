variable "beta" { default = 0.1 }

stage "load" "prefs" {
  path = "data/prefs.jsonl"
}

stage "tokenize" "tok" {
  input     = stage.load.prefs
  tokenizer = "models/tok512.bin"
}

stage "reference_logprobs" "ref" {
  input = stage.tokenize.tok
  model = "models/stories260K.bin"
}

stage "dpo" "train" {
  input = stage.reference_logprobs.ref
  model = "models/stories260K.bin"
  beta  = var.beta
}

stage "evaluate" "eval" {
  input = stage.reference_logprobs.ref
  model = stage.dpo.train
  beta  = var.beta
}

stage "report" "html" {
  input = stage.evaluate.eval
}
