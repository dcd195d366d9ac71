# stage-values: known
stage "load" "a" {
  path = "a.jsonl"
}

stage "load" "b" {
  path = "b.jsonl"
}

stage "load" "c" {
  path = "c.jsonl"
}

stage "dpo" "train" {
  input     = stage.load.a
  model     = "${stage.load.b}/model.bin"
  loss      = { sigmoid = stage.load["c"] != "" ? 1 : 0, sft = 0.1 }
  tags      = [for t in [stage.load.a, "x"] : upper(t)]
  max_steps = 10
}
