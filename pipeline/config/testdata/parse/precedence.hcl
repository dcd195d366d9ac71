# env: DPOPIPE_VAR_b=env
# env: DPOPIPE_VAR_c=env
# env: DPOPIPE_VAR_d=env
# env: DPOPIPE_VAR_undeclared=ignored
# env: HOME=/root
# var-file: vars/precedence.hcl
# var: d=cli
# var: e=cli-first
# var: e=cli-last
# var: layers=[1, 2, 3]
# var: columns={prompt = "q", chosen = "a"}
# var: anything=some text
# var: number_any=1.5
# var: f=a=b
variable "a" { default = "default" }
variable "b" { default = "default" }
variable "c" { default = "default" }
variable "d" { default = "default" }
variable "e" { type = string }
variable "f" { type = string }
variable "layers" { type = list(number) }
variable "columns" { type = map(string) }
variable "anything" { type = any }
variable "number_any" {}
variable "opts" {
  type = object({
    eval = number
    seed = optional(number, 7)
  })
  default = { eval = 0.1 }
}
