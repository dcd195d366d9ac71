stage "load" "prefs" {
  path "data/prefs.jsonl"
}
