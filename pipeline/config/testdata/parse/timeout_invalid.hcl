stage "load" "prefs" {
  path    = "p.jsonl"
  timeout = "30 minutes"
}

stage "load" "other" {
  path    = "p.jsonl"
  timeout = "-5s"
}
