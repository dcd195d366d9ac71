stage "load" "prefs" {
  path = "a.jsonl"
}

stage "dpo" "train" {
  input     = stage.load.prefs
  model     = stage.load.prefs
  max_steps = 10
}
