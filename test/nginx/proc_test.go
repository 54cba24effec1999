package nginx

import (
	"syscall"
	"time"
)

func sysKill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

// alive reports whether pid exists (and is not a zombie we would never reap: nginx
// reaps its workers).
func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func timeout() <-chan time.Time { return time.After(long) }
