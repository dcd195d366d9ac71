stage "laod" "prefs" {
  path = "data/prefs.jsonl"
}

stage "judge" "j" {
  input = stage.laod.prefs
}
