plugin "judge" {
  source = "./bin/judge"
  sha256 = "abc"
}

plugin "judge" {
  source = "./bin/judge2"
}

plugin "nosource" {
  sha = "x"
}
