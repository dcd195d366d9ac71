variable "model" {
  type        = string
  description = "The model to train."
}

variable "beta" {
  default = 0.1
}

stage "dpo" "train" {
  model     = var.model
  beta      = var.beta
  max_steps = 10
}
