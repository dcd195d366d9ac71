package host

import (
	"os/exec"
	"syscall"
)

// bindToParent makes the kernel kill the plugin when the host dies, even by
// SIGKILL, so that no plugin outlives its host.
func bindToParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
