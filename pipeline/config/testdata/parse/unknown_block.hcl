name = "exp"

stages "load" "prefs" {
  path = "a.jsonl"
}

variables "x" {}

stage "load" {
  path = "a.jsonl"
}
