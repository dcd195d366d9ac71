//go:build unix

package cache

import (
	"os"
	"syscall"
)

// statExtra returns the inode, device and ctime (ns) of a file.
func statExtra(fi os.FileInfo) (ino, dev uint64, ctime int64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino), uint64(st.Dev), st.Ctim.Sec*1e9 + st.Ctim.Nsec
	}
	return 0, 0, 0
}

// lockFile takes a flock on f: shared or exclusive. It blocks until granted.
func lockFile(f *os.File, exclusive bool) error {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			return err
		}
	}
}
