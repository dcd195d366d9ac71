variable "beta" {
  type    = number
  default = 0.1
  validation {
    condition     = var.beta > 0
    error_message = "beta must be positive."
  }
}

stage "load" "prefs" {
  path    = "data/prefs.jsonl"          # .jsonl .json .parquet .arrow .csv, optionally .gz; or a directory
  columns = { prompt = "question", chosen = "response_j", rejected = "response_k" }
  split   = { eval = 0.1, seed = 7 }
}

stage "tokenize" "tok" {
  input             = stage.load.prefs
  tokenizer         = "models/tok512.bin"
  max_length        = 256
  max_prompt_length = 128
  truncation        = "keep_end"
}

stage "reference_logprobs" "ref" {
  input = stage.tokenize.tok
  model = "models/stories260K.bin"      # llama2.c .bin, or an HF directory (config.json + *.safetensors)
}

stage "dpo" "train" {
  input         = stage.reference_logprobs.ref
  model         = "models/stories260K.bin"
  loss          = "sigmoid"             # or { sigmoid = 1.0, sft = 0.1 }
  beta          = var.beta
  learning_rate = 5e-5
  batch_size    = 8
  max_steps     = 200
}

stage "evaluate" "eval" {
  input  = stage.reference_logprobs.ref   # it scores the eval split
  model  = stage.dpo.train
  beta   = var.beta
  losses = ["sigmoid", "ipo"]
}
