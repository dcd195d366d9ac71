# var: name=exp1
variable "name" { type = string }
variable "base_lr" { default = 1e-4 }

locals {
  model_dir = "models"
  model     = "${local.model_dir}/stories260K.bin"
  lr        = var.base_lr / 2
}

locals {
  tags = [var.name, upper(var.name), format("lr=%g", local.lr)]
}

stage "dpo" "train" {
  model         = local.model
  learning_rate = local.lr
  tags          = local.tags
  max_steps     = 10
}
