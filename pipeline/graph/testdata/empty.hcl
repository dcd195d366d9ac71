# A pipeline without stages.
variable "x" { default = 1 }
