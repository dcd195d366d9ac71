# dpopipe quickstart: DPO teaches a tiny from-scratch model to reverse strings.
#
# The task: "rev abc=" -> "cba". Every pair's chosen answer is the reversal and
# its rejected answer the input copied unreversed (a systematic error). The
# sft stage warms a 2-layer, 64-dim byte-level model up on BOTH answers of the
# train prompts, so it learns to reverse and to copy and is unsure which one is
# wanted. DPO then trains on the same preference pairs; evaluate and judge
# compare the greedy completions of the SFT model (the reference) and of the
# DPO policy on 200 held-out prompts that no stage trained on.
#
# Measured with `make run` on an idle 2-core machine, fresh cache: the
# pipeline took 21.5 s (sft 12.8 s, dpo 1.4 s, the rest under 0.5 s each),
# excluding the Go build. Training is deterministic, so these numbers repeat:
#   held-out preference accuracy 1.000 (mean reward margin 1.80)
#   chosen more likely than rejected: SFT model 0.460, DPO policy 1.000
#   exact-answer accuracy of greedy generations on 200 held-out prompts:
#     before DPO (SFT model) 0.405, after DPO 0.825 (+0.420)
#   judge (exact): policy win rate 0.710 (89 wins, 106 ties, 5 losses)

# Run it from the repository root:
#   go run ./cmd/dpopipe run examples/quickstart/train.hcl

variable "beta" {
  type        = number
  default     = 0.1
  description = "DPO's beta: the KL strength and the reward scale."
  validation {
    condition     = var.beta > 0
    error_message = "beta must be positive."
  }
}

variable "sft_steps" {
  type        = number
  default     = 1500
  description = "Warm-up steps of the from-scratch model."
}

stage "generate" "task" {
  task          = "reverse"
  n             = 2000
  seed          = 1
  eval_fraction = 0.1
  min_len       = 2
  max_len       = 4
}

stage "tokenize" "tok" {
  input             = stage.generate.task
  builtin_tokenizer = "bytes"
  max_length        = 32
  max_prompt_length = 16
}

# A mix of correct and wrong answers: the warmed-up model can do both.
stage "sft" "warm" {
  input = stage.tokenize.tok
  init = {
    vocab_size = 259, dim = 64, layers = 2, heads = 4, hidden_dim = 128,
    seq_len = 32, seed = 1, bos = 256, eos = 257
  }
  target        = "both"
  learning_rate = 5e-3
  lr_scheduler  = "cosine"
  warmup_steps  = 30
  batch_size    = 32
  max_steps     = var.sft_steps
  logging_steps = 100
  seed          = 1
}

stage "reference_logprobs" "ref" {
  input      = stage.tokenize.tok
  model      = stage.sft.warm
  batch_size = 64
}

# DPO with an NLL term on the chosen answer (RPO, TRL's rpo_alpha = 1), which
# keeps the reversal skill intact while the preference moves.
stage "dpo" "train" {
  input         = stage.reference_logprobs.ref
  model         = stage.sft.warm
  loss          = { sigmoid = 1, sft = 1 }
  beta          = var.beta
  learning_rate = 3e-4
  lr_scheduler  = "constant"
  batch_size    = 32
  max_steps     = 150
  logging_steps = 10
  seed          = 1
}

stage "evaluate" "eval" {
  input           = stage.reference_logprobs.ref
  model           = stage.dpo.train
  reference_model = stage.sft.warm
  tokenizer       = "bytes"
  beta            = var.beta
  losses          = ["sigmoid", "ipo"]
  samples         = -1
  max_new_tokens  = 16
}

stage "judge" "exact" {
  input = stage.evaluate.eval
  rule  = "exact"
}

stage "report" "report" {
  train = stage.dpo.train
  sft   = stage.sft.warm
  eval  = stage.evaluate.eval
  judge = stage.judge.exact
  title = "dpopipe quickstart: string reversal"
}
