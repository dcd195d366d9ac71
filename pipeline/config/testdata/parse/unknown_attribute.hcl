stage "tokenize" "tok" {
  tokenzier  = "tok.bin"
  max_length = 256
  cache      = "off"
}
