//go:build !unix

package cache

import "os"

func statExtra(fi os.FileInfo) (ino, dev uint64, ctime int64) { return 0, 0, 0 }

// lockFile is a no-op where flock is unavailable: concurrent gc and commit
// from different processes are then not excluded.
func lockFile(f *os.File, exclusive bool) error { return nil }
