stage "dpo" "train" {
  model = "m.bin"
}

stage "tokenize" "tok" {
  tokenizer = null
}
