//go:build linux

package faulttest

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// HoldWriteLock re-runs the test binary as the lock holder (its TestMain
// must call LockHolderMain) on the database at path, and returns once it
// holds the lock. release ends it; so does the test's end.
func HoldWriteLock(t testing.TB, path string) (release func()) {
	t.Helper()
	// os.Executable, not os.Args[0]: caddytest overwrites os.Args.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), lockHolderEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // if the test binary dies first
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := new(Output)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	locked := make(chan bool, 1)
	exited := make(chan error, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		locked <- line == "locked\n"
		exited <- cmd.Wait() // after the read: Wait closes stdout
	}()
	var once sync.Once
	release = func() {
		once.Do(func() {
			stdin.Close()
			select {
			case err := <-exited:
				if err != nil {
					t.Errorf("lock holder: %v: %s", err, stderr)
				}
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
				t.Error("lock holder still running 10s after its release")
			}
		})
	}
	t.Cleanup(release)
	select {
	case ok := <-locked:
		if !ok {
			t.Fatalf("lock holder did not lock: %s", stderr)
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("lock holder did not lock within 20s: %s", stderr)
	}
	return release
}

// MountTmpfs mounts a tmpfs of the given size (as mount's size=, e.g.
// "1m") on a new temp dir and returns the dir; it is detached when the test
// ends. It needs root (CAP_SYS_ADMIN); without it the test is skipped
// (see Unsupported).
func MountTmpfs(t testing.TB, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+size+",mode=0700"); err != nil {
		Unsupported(t, "simulating a full disk needs a tmpfs mount, which needs CAP_SYS_ADMIN: %v", err)
	}
	t.Cleanup(func() {
		// Detach: a store or an in-process Caddy may still hold files
		// open in it.
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// FillDisk writes a file into dir until the file system is full, then
// frees slack bytes of it again, and returns the file's path.
func FillDisk(t testing.TB, dir string, slack int64) (path string) {
	t.Helper()
	path = filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	var size int64
	for i := 0; ; i++ {
		if i == 1<<20 {
			t.Fatal("4 GiB written and the disk is not full")
		}
		n, err := f.Write(buf)
		size += int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if slack > 0 {
		if err := f.Truncate(max(0, size-slack)); err != nil {
			t.Fatal(err)
		}
	}
	return path
}
