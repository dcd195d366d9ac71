# A stage may refer to a stage declared further down.
stage "report" "html" {
  input = stage.evaluate.eval
}

stage "evaluate" "eval" {
  input = stage.load.prefs
}

stage "load" "prefs" {
  path = "p.jsonl"
}
