stage "load" "prefs" {
  path = "p.jsonl"
  cache {
    mode = "of"
  }
  cache {
    mode = "off"
  }
}

stage "load" "other" {
  path = "p.jsonl"
  cache {
    mode    = "content"
    enabled = true
  }
}
