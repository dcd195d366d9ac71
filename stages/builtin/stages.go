package builtin

func init() {
}
