/*!
The flag tables. Each binary lists its flags once, as [`Flag`]s: its
parser accepts those and no other (`known`), its `--help` shows them
(`option_lines`), and the integration tests check its man page and the
README against the same table. `entry` lays out one line of a help
text (a flag or a command and what it does) for both binaries.
*/
#![forbid(unsafe_code)]

use lexopt::Arg;

use super::usage;
use crate::error::Result;

/// One flag of a binary: how it is spelled, the placeholder of its value,
/// and its lines in `--help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flag {
    /// The long name, without the dashes (`socket` for `--socket`).
    pub long: Option<&'static str>,
    /// The short letter (`D` for `-D`).
    pub short: Option<char>,
    /// The placeholder of the value the flag takes (`PATH`, `N`), if any.
    pub value: Option<&'static str>,
    /// A command word that does the same, shown first (`help` in
    /// `llxprt-cred`).
    pub word: Option<&'static str>,
    /// What it does: the help's text, one line of the help a line.
    pub help: &'static str,
}

impl Flag {
    const NONE: Flag = Flag { long: None, short: None, value: None, word: None, help: "" };

    /// A flag spelled `--name`.
    pub const fn long(name: &'static str) -> Flag {
        Flag { long: Some(name), ..Flag::NONE }
    }

    /// A flag spelled `-c` only.
    pub const fn letter(c: char) -> Flag {
        Flag { short: Some(c), ..Flag::NONE }
    }

    /// The same flag, also spelled `-c`.
    pub const fn short(self, c: char) -> Flag {
        Flag { short: Some(c), ..self }
    }

    /// The same flag, taking a value shown as `placeholder`.
    pub const fn value(self, placeholder: &'static str) -> Flag {
        Flag { value: Some(placeholder), ..self }
    }

    /// The same flag, with a command word that does the same.
    pub const fn word(self, word: &'static str) -> Flag {
        Flag { word: Some(word), ..self }
    }

    /// The same flag, with its help text.
    pub const fn help(self, text: &'static str) -> Flag {
        Flag { help: text, ..self }
    }

    /// Every spelling on the command line: `-D` and `--foreground`.
    pub fn names(&self) -> Vec<String> {
        let short = self.short.map(|c| format!("-{c}"));
        short.into_iter().chain(self.long.map(|l| format!("--{l}"))).collect()
    }

    /// How the help names it: `-D, --foreground`, `--socket PATH`,
    /// `help, -h, --help`.
    pub fn usage(&self) -> String {
        let mut shown: Vec<String> = self.word.map(str::to_owned).into_iter().collect();
        shown.extend(self.names());
        let mut usage = shown.join(", ");
        if let Some(value) = self.value {
            usage.push(' ');
            usage.push_str(value);
        }
        usage
    }
}

/// `arg` as the table `flags` knows it: a short letter of a flag that has
/// a long name comes back as the long name, so a parser matches one
/// spelling of each flag; operands pass through. A flag the table does not
/// list is a usage error (lexopt's "invalid option").
pub(crate) fn known(flags: &'static [Flag], arg: Arg<'_>) -> Result<Arg<'static>> {
    let found = match &arg {
        Arg::Short(c) => flags.iter().find(|f| f.short == Some(*c)),
        Arg::Long(name) => flags.iter().find(|f| f.long == Some(*name)),
        Arg::Value(_) => None,
    };
    match (arg, found) {
        (Arg::Value(v), _) => Ok(Arg::Value(v)),
        (_, Some(Flag { long: Some(name), .. })) => Ok(Arg::Long(name)),
        (_, Some(Flag { short: Some(c), .. })) => Ok(Arg::Short(*c)),
        (arg, _) => Err(usage(arg.unexpected())),
    }
}

/// Appends one entry of a help text: two spaces, `name`, and the first
/// line of `text` at column `width` + 2, its other lines under it. A name
/// shorter than `width` is padded to it; one exactly as wide is followed
/// by two spaces; a longer one stands on a line of its own.
pub(crate) fn entry(out: &mut String, name: &str, text: &str, width: usize) {
    let indent = " ".repeat(width + 2);
    out.push_str("  ");
    out.push_str(name);
    let len = name.chars().count();
    if len < width {
        out.push_str(&" ".repeat(width - len));
    } else if len == width {
        out.push_str("  ");
    } else {
        out.push('\n');
        out.push_str(&indent);
    }
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push_str(&indent);
        }
        out.push_str(line);
        out.push('\n');
    }
}

/// The option lines of a help text: one `entry` per flag, in table order.
pub(crate) fn option_lines(flags: &[Flag], width: usize) -> String {
    let mut out = String::new();
    for flag in flags {
        entry(&mut out, &flag.usage(), flag.help, width);
    }
    out
}

/// A value a parser accepts for a flag whose value `placeholder` names
/// (the parsers' tests try every flag of their table).
#[cfg(test)]
pub(crate) fn sample(placeholder: &str) -> &'static str {
    match placeholder {
        "NAME" => "work",
        "PROVIDER" | "PROVIDER[:BUCKET]" => "codex",
        "B" | "BUCKET" => "team",
        "PATH" => "/nonexistent/x",
        "N" => "5",
        "UID" => "1000",
        "LEVEL" => "debug",
        "FLOW" => "device_code",
        "CLASS[,CLASS]" => "refresh",
        "OWNER/REPO" => "octo/demo",
        "auto|keyring|file" => "file",
        other => panic!("no sample value for {other}: add one to cli::flags::sample"),
    }
}

/// For the parsers' tests: `parse` accepts every spelling of every flag of
/// `flags` (with a sample value, then `--help`), and refuses flags the
/// table does not list.
#[cfg(test)]
pub(crate) fn assert_parser_takes_the_table(flags: &[Flag], parse: impl Fn(&[&str]) -> Result<()>) {
    let mut refused = vec!["--bogus".to_owned(), "-x".to_owned()];
    for flag in flags {
        for name in flag.names() {
            let mut line = vec![name.as_str()];
            line.extend(flag.value.map(sample));
            line.push("--help");
            let parsed = parse(&line);
            assert!(parsed.is_ok(), "{line:?}: {:?}", parsed.err());
        }
        // the letter of a short flag is not a long name
        refused.extend(flag.short.map(|c| format!("--{c}")));
    }
    for bogus in &refused {
        let parsed = parse(&[bogus, "--help"]);
        assert!(matches!(parsed, Err(crate::error::Error::Usage(_))), "{bogus}: {parsed:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[Flag] = &[
        Flag::long("foreground").short('D').help("stay"),
        Flag::letter('s').help("sh"),
        Flag::long("socket").value("PATH").help("listen here"),
        Flag::long("help").short('h').word("help").help("print this help"),
    ];

    #[test]
    fn usages_and_names() {
        let usages: Vec<String> = TABLE.iter().map(Flag::usage).collect();
        assert_eq!(usages, ["-D, --foreground", "-s", "--socket PATH", "help, -h, --help"]);
        assert_eq!(TABLE[0].names(), ["-D", "--foreground"]);
        assert_eq!(TABLE[3].names(), ["-h", "--help"], "the command word is not a flag");
    }

    #[test]
    fn known_flags_come_back_in_one_spelling() {
        assert_eq!(known(TABLE, Arg::Short('D')).unwrap(), Arg::Long("foreground"));
        assert_eq!(known(TABLE, Arg::Long("foreground")).unwrap(), Arg::Long("foreground"));
        assert_eq!(known(TABLE, Arg::Short('s')).unwrap(), Arg::Short('s'));
        assert_eq!(known(TABLE, Arg::Value("x".into())).unwrap(), Arg::Value("x".into()));
        for unknown in [Arg::Short('x'), Arg::Long("bogus"), Arg::Long("D")] {
            let e = known(TABLE, unknown.clone()).unwrap_err();
            assert!(matches!(e, crate::error::Error::Usage(_)), "{unknown:?}");
            assert_eq!(e.to_string(), usage(unknown.unexpected()).to_string());
        }
    }

    #[test]
    fn entries_pad_wrap_and_continue() {
        let mut out = String::new();
        entry(&mut out, "--a N", "one\ntwo", 8);
        entry(&mut out, "--abcdef", "exact", 8);
        entry(&mut out, "--abcdefg", "long", 8);
        assert_eq!(out, "  --a N   one\n          two\n  --abcdef  exact\n  --abcdefg\n          long\n");
        assert_eq!(option_lines(&TABLE[1..3], 16), "  -s              sh\n  --socket PATH   listen here\n");
    }
}
