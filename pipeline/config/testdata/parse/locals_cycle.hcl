locals {
  a = local.b + 1
  b = local.c * 2
  c = local.a
  d = local.d
  e = local.nope
  f = var.nope
  g = 1
}
