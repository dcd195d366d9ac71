c     = "var-file"
d     = "var-file"
# a typo: warned, not fatal
lyers = [1]
opts  = { eval = 0.2 }
