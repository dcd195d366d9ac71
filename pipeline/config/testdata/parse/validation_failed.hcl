# var: beta=-0.5
variable "beta" {
  type    = number
  default = 0.1
  validation {
    condition     = var.beta > 0
    error_message = "beta must be positive."
  }
  validation {
    condition     = var.beta < 10
    error_message = "beta must be below 10."
  }
}

variable "loss" {
  type    = string
  default = "hinge2"
  validation {
    condition     = contains(["sigmoid", "ipo", "hinge"], var.loss)
    error_message = format("loss %q is not one of sigmoid, ipo and hinge.", var.loss)
  }
}

variable "steps" {
  type    = number
  default = 5
  validation {
    condition     = var.steps
    error_message = "never shown"
  }
}
