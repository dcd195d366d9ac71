# env: DPOPIPE_VAR_steps=many
# var-file: vars/bad.hcl
# var: beta=abc
# var: layers=[1,
# var: bta=1
# var: nonsense
variable "beta" { type = number }
variable "steps" { type = number }
variable "flag" { type = bool }
variable "layers" { type = list(number) }
