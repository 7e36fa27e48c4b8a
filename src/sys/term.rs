/*!
The terminal on standard input: whether there is one, and reading a
secret from it with echo switched off.
*/

use std::io;
use std::mem::MaybeUninit;

use super::cerr;

/// Whether standard input is a terminal.
pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// Reads one line from the terminal on stdin with echo switched off, for
/// secrets typed at a prompt. Echo is restored even when reading fails.
pub fn read_line_without_echo() -> io::Result<String> {
    let mut term = MaybeUninit::<libc::termios>::uninit();
    // SAFETY: `term` is valid for writes of a termios.
    cerr(unsafe { libc::tcgetattr(libc::STDIN_FILENO, term.as_mut_ptr()) })?;
    // SAFETY: tcgetattr succeeded, so `term` is initialised.
    let saved = unsafe { term.assume_init() };
    let mut quiet = saved;
    quiet.c_lflag &= !(libc::ECHO | libc::ECHONL);
    quiet.c_lflag |= libc::ICANON;
    // SAFETY: `quiet` is a valid termios copied from the current settings.
    cerr(unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &quiet) })?;
    let mut line = String::new();
    let read = io::stdin().read_line(&mut line);
    // SAFETY: `saved` is the unmodified termios read above.
    unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &saved) };
    read.map(|_| line)
}
