# Two independent branches joined at the end; the file order among ready
# stages decides the order, not the names.
stage "load" "zeta" {
  path = "z.jsonl"
}

stage "load" "alpha" {
  path = "a.jsonl"
}

stage "tokenize" "zeta_tok" {
  input = stage.load.zeta
}

stage "judge" "standalone" {
  prompt = "rate"
}

stage "tokenize" "alpha_tok" {
  input = stage.load.alpha
}

stage "merge" "both" {
  inputs = [stage.tokenize.alpha_tok, stage.tokenize.zeta_tok, stage.load.alpha]
  note   = "${stage.load.zeta}"
}
