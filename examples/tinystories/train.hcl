# The quickstart pipeline on a real pretrained model: stories260K (a llama2.c
# checkpoint trained on TinyStories) with its tok512 tokenizer, on preference
# pairs read from a JSON Lines file. No sft warm-up: the model is already
# trained. Pass the files with -var, for example with the repository's test
# assets:
#
#   go run ./cmd/dpopipe run examples/tinystories/train.hcl \
#     -var model=../shared/assets/models/stories260K/stories260K.bin \
#     -var tokenizer=../shared/assets/models/stories260K/tok512.bin \
#     -var pairs=data/story_prefs.jsonl
#
# The pairs file has one object per line with "prompt", "chosen" and
# "rejected" strings (see the load stage for other formats and column names).

variable "model" {
  type        = string
  description = "The policy's starting weights and the reference: a llama2.c .bin such as stories260K.bin, or an HF directory."
}

variable "tokenizer" {
  type        = string
  description = "The model's tokenizer, e.g. tok512.bin for stories260K."
}

variable "pairs" {
  type        = string
  description = "Preference pairs: a .jsonl (or .json, .parquet, .arrow, .csv) file with prompt, chosen and rejected."
}

variable "beta" {
  type        = number
  default     = 0.1
  description = "DPO's beta."
}

variable "max_steps" {
  type        = number
  default     = 200
  description = "DPO optimizer steps."
}

stage "load" "prefs" {
  path  = var.pairs
  split = { eval = 0.1, seed = 7 }
}

stage "tokenize" "tok" {
  input             = stage.load.prefs
  tokenizer         = var.tokenizer
  max_length        = 256
  max_prompt_length = 128
}

stage "reference_logprobs" "ref" {
  input = stage.tokenize.tok
  model = var.model
}

stage "dpo" "train" {
  input         = stage.reference_logprobs.ref
  model         = var.model
  tokenizer     = var.tokenizer
  loss          = "sigmoid"
  beta          = var.beta
  learning_rate = 5e-5
  batch_size    = 8
  max_steps     = var.max_steps
  logging_steps = 10
}

stage "evaluate" "eval" {
  input           = stage.reference_logprobs.ref
  model           = stage.dpo.train
  reference_model = var.model
  tokenizer       = var.tokenizer
  beta            = var.beta
  losses          = ["sigmoid", "ipo"]
  samples         = 16
  max_new_tokens  = 64
}

# Story completions have no single right answer: judge by length here, or
# plug in your own judge stage (a reward-model service) with the same input.
stage "judge" "length" {
  input  = stage.evaluate.eval
  rule   = "length"
  prefer = "longer"
}

stage "report" "report" {
  train = stage.dpo.train
  eval  = stage.evaluate.eval
  judge = stage.judge.length
  title = "stories260K DPO"
}
