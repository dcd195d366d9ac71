stage "load" "prefs" {
  path = "p.jsonl"
}

stage "tokenize" "tok" {
  input = stage.load.prefs
  extra = stage.dpo.train
}

stage "reference_logprobs" "ref" {
  input = stage.tokenize.tok
}

stage "dpo" "train" {
  input = stage.reference_logprobs.ref
}

stage "judge" "self" {
  input = stage.judge.self
}

stage "report" "after" {
  input = stage.dpo.train
}
