//! The man pages, `--help` and the parsers in step: every flag of a
//! binary's flag table (`cli::credd::FLAGS`, `cli::cred::FLAGS`; its
//! parser accepts those and no other, which the parsers' unit tests prove)
//! is in its `--help` and its man page, every flag the man page or `--help`
//! shows is in the table and accepted by the real binary, `llxprt-cred`'s
//! command table and its man page name the same commands, and the pages
//! pass `mandoc -T lint` and `man --warnings`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use llxprt_credd::cli::flags::Flag;

use crate::harness::*;
use crate::needs::*;

const CREDD: &str = env!("CARGO_BIN_EXE_llxprt-credd");
const CRED: &str = env!("CARGO_BIN_EXE_llxprt-cred");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap()
}

/// The flags of a binary's flag table, as the command line spells them.
fn table_flags(flags: &[Flag]) -> BTreeSet<String> {
    flags.iter().flat_map(Flag::names).collect()
}

/// The command words of `llxprt-cred`'s command table (and `help`).
fn cred_words() -> BTreeSet<String> {
    llxprt_credd::cli::cred::command_words().into_iter().map(str::to_owned).collect()
}

/// The body of `pub fn parse` in the bench's source (the bench is no
/// binary of the package and has no flag table).
fn parse_fn(source: &str) -> &str {
    let start = source.find("pub fn parse(").expect("a parse function");
    let end = source[start..].find("\n}\n").expect("end of parse") + start;
    &source[start..end]
}

/// Flags the parser matches: `Long("x")` and `Short('x')` patterns.
fn parser_flags(source: &str) -> BTreeSet<String> {
    let body = parse_fn(source);
    let mut flags = BTreeSet::new();
    for (open, close, dashes) in [("Long(\"", '"', "--"), ("Short('", '\'', "-")] {
        for (i, _) in body.match_indices(open) {
            let rest = &body[i + open.len()..];
            flags.insert(format!("{dashes}{}", &rest[..rest.find(close).unwrap()]));
        }
    }
    flags
}

/// Command words the parser matches: the string literals of slice patterns
/// such as `["key", "set", name]` or `["login", spec] | ["logout", spec]`.
fn parser_words(source: &str) -> BTreeSet<String> {
    let mut words = BTreeSet::new();
    for line in parse_fn(source).lines().filter(|l| l.trim_start().starts_with('[')) {
        for group in line.split('[').skip(1) {
            let pattern = group.split(']').next().unwrap_or_default();
            for part in pattern.split(',') {
                if let Some(w) = part.trim().strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
                    words.insert(w.to_string());
                }
            }
        }
    }
    words
}

/// Flags named in help text: `-x` or `--xyz` after a space, `[`, `|`,
/// `(` or `,`, or at the start of a line.
fn help_flags(help: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    let bytes = help.as_bytes();
    for (i, _) in help.match_indices('-') {
        let before = if i == 0 { b'\n' } else { bytes[i - 1] };
        if !b" \n[|(,".contains(&before) {
            continue;
        }
        let token: String =
            help[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        let name = token.trim_start_matches('-');
        if !name.is_empty()
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && token.len() - name.len() <= 2
        {
            flags.insert(token.trim_end_matches('-').to_string());
        }
    }
    flags
}

/// Whether a token is an mdoc macro name (`Ar`, `Op`, `Ns`, `Cm`, ...).
fn is_macro(token: &str) -> bool {
    (2..=3).contains(&token.len())
        && token.starts_with(|c: char| c.is_ascii_uppercase())
        && token[1..].chars().all(|c| c.is_ascii_lowercase())
}

/// A flag named with `Fl` in a man page, and the placeholder of its value
/// (`Ar X` or `Cm x`) when one follows on the same line.
fn man_flags(page: &str) -> Vec<(String, Option<String>)> {
    let mut flags = Vec::new();
    for line in page.lines().filter(|l| l.starts_with('.') && !l.starts_with(".\\\"")) {
        let tokens: Vec<&str> = line[1..].split_whitespace().collect();
        let mut i = 0;
        while i < tokens.len() {
            if tokens[i] != "Fl" {
                i += 1;
                continue;
            }
            i += 1;
            while i < tokens.len() && !is_macro(tokens[i]) {
                let t = tokens[i];
                // `Fl -` alone is the `--` before exec mode's COMMAND.
                if t.trim_start_matches('-').starts_with(|c: char| c.is_ascii_alphabetic()) {
                    let value = match (tokens.get(i + 1), tokens.get(i + 2)) {
                        (Some(&"Ar") | Some(&"Cm"), Some(v)) => Some(v.to_string()),
                        _ => None,
                    };
                    flags.push((format!("-{t}"), value));
                }
                i += 1;
            }
        }
    }
    flags
}

/// `Cm` words in a man page's SYNOPSIS (the command words).
fn synopsis_commands(page: &str) -> BTreeSet<String> {
    let start = page.find(".Sh SYNOPSIS").unwrap();
    let end = page[start..].find(".Sh DESCRIPTION").unwrap() + start;
    let mut words = BTreeSet::new();
    for line in page[start..end].lines() {
        if let Some(rest) = line.strip_prefix(".Cm ") {
            for w in rest.split_whitespace().filter(|w| *w != "|" && !is_macro(w)) {
                words.insert(w.to_string());
            }
        }
    }
    for value in ["auto", "keyring", "file"] {
        words.remove(value);
    }
    words
}

fn help_of(binary: &str) -> String {
    let out = Command::new(binary).arg("--help").output().unwrap();
    assert!(out.status.success());
    stdout(&out)
}

/// A value for a flag, by the placeholder the man page gives it.
fn sample(placeholder: &str) -> &'static str {
    match placeholder {
        "NAME" => "work",
        "PROVIDER" => "codex",
        "BUCKET" => "team",
        "PATH" => "/nonexistent/x",
        "N" => "5",
        "UID" => "1000",
        "LEVEL" => "debug",
        "FLOW" => "device_code",
        "CLASS" => "refresh",
        "OWNER/REPO" => "octo/demo",
        "auto" => "file",
        other => panic!("no sample value for placeholder {other}: add one to docs.rs"),
    }
}

struct Binary {
    path: &'static str,
    name: &'static str,
    flags: &'static [Flag],
    page: &'static str,
}

const BINARIES: [Binary; 2] = [
    Binary {
        path: CREDD,
        name: "llxprt-credd",
        flags: llxprt_credd::cli::credd::FLAGS,
        page: "man/llxprt-credd.1",
    },
    Binary {
        path: CRED,
        name: "llxprt-cred",
        flags: llxprt_credd::cli::cred::FLAGS,
        page: "man/llxprt-cred.1",
    },
];

#[test]
fn flag_table_help_and_man_page_name_the_same_flags() {
    for b in &BINARIES {
        let table = table_flags(b.flags);
        let help = help_flags(&help_of(b.path));
        let page = read(b.page);
        let man: BTreeSet<String> = man_flags(&page).into_iter().map(|(f, _)| f).collect();
        assert!(table.len() >= 8, "{}: the flag table is too short: {table:?}", b.name);
        for flag in &table {
            assert!(help.contains(flag), "{}: {flag} is accepted but not in --help", b.name);
            assert!(man.contains(flag), "{}: {flag} is accepted but not in {}", b.name, b.page);
        }
        for flag in &help {
            assert!(
                table.contains(flag),
                "{}: --help shows {flag}, which is not in its flag table (the parser does not accept it)",
                b.name
            );
        }
        for flag in &man {
            assert!(table.contains(flag), "{} shows {flag}, which {} does not accept", b.page, b.name);
        }
    }
    // The section 7 page names flags of both binaries only.
    let all: BTreeSet<String> = BINARIES.iter().flat_map(|b| table_flags(b.flags)).collect();
    for (flag, _) in man_flags(&read("man/llxprt-credd.7")) {
        assert!(all.contains(&flag), "llxprt-credd.7 shows {flag}, which neither binary accepts");
    }
}

#[test]
fn every_documented_flag_is_accepted_by_the_real_binary() {
    for b in &BINARIES {
        let help = help_of(b.path);
        let mut tried = BTreeSet::new();
        for (flag, placeholder) in man_flags(&read(b.page)) {
            if !tried.insert(flag.clone()) {
                continue;
            }
            // Flags before --help are parsed, then the help is printed and
            // nothing runs; an unknown flag or a bad value is a usage error.
            let mut cmd = Command::new(b.path);
            cmd.arg(&flag);
            if let Some(p) = &placeholder {
                cmd.arg(sample(p));
            }
            let out = cmd.arg("--help").output().unwrap();
            // -V wins over --help in llxprt-cred; either way, nothing ran.
            let meta = ["-h", "--help", "-V", "--version"].contains(&flag.as_str());
            assert!(
                out.status.success() && (meta || stdout(&out) == help),
                "{} {flag} {placeholder:?}: not accepted: {}",
                b.path,
                stderr(&out)
            );
        }
        let bogus = Command::new(b.path).args(["--no-such-flag", "--help"]).output().unwrap();
        assert_eq!(bogus.status.code(), Some(2), "an unknown flag is a usage error");
    }
}

#[test]
fn cred_commands_in_table_help_and_man_page_agree() {
    let parser = cred_words();
    let help = help_of(CRED);
    let man = synopsis_commands(&read("man/llxprt-cred.1"));
    assert!(parser.contains("key") && parser.contains("get-key"), "command words: {parser:?}");
    for word in &parser {
        assert!(help.split_whitespace().any(|w| w == word), "command word {word} is not in --help");
        assert!(man.contains(word), "command word {word} is not in the SYNOPSIS of llxprt-cred.1");
    }
    for word in &man {
        assert!(
            parser.contains(word),
            "llxprt-cred.1 shows command {word}, which the parser does not accept"
        );
    }
}

fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> =
        std::fs::read_dir(repo("man")).unwrap().flatten().map(|e| e.path()).collect();
    pages.sort();
    assert_eq!(pages.len(), 4, "{pages:?}");
    pages
}

#[test]
fn man_pages_pass_mandoc_lint() {
    if !tool_tests_enabled("mandoc", "mandoc") {
        return;
    }
    for page in pages() {
        let out = Command::new("mandoc").args(["-T", "lint", "-W", "style"]).arg(&page).output().unwrap();
        // Cross references are looked up among the manuals installed on
        // this machine, which our own pages are not (yet): not a defect of
        // the page.
        let complaints: Vec<String> = stdout(&out)
            .lines()
            .chain(stderr(&out).lines())
            .filter(|l| !l.contains("referenced manual not found") && !l.contains("outdated mandoc.db"))
            .map(str::to_owned)
            .collect();
        assert!(complaints.is_empty(), "{}:\n{}", page.display(), complaints.join("\n"));
    }
}

#[test]
fn man_pages_render_without_warnings() {
    if !tool_tests_enabled("man", "man-db") {
        return;
    }
    for page in pages() {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&page)
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", page.display(), stderr(&out));
        assert_eq!(stderr(&out), "", "{}", page.display());
        assert!(stdout(&out).contains("NAME"), "{}", page.display());
    }
    // Cross references to our own pages name pages that exist.
    for page in pages() {
        for line in std::fs::read_to_string(&page).unwrap().lines() {
            if let Some(rest) = line.strip_prefix(".Xr llxprt-") {
                let mut parts = rest.split_whitespace();
                let (name, section) = (parts.next().unwrap(), parts.next().unwrap());
                let target = repo(&format!("man/llxprt-{name}.{section}"));
                assert!(target.exists(), "{}: .Xr to missing {}", page.display(), target.display());
            }
        }
    }
}

/// The options `contrib/llxprt-sandbox`'s argument loop accepts: its
/// `case` patterns such as `--profile | --allow | --allow-key)`.
fn wrapper_flags() -> BTreeSet<String> {
    let source = read("contrib/llxprt-sandbox");
    let start = source.find("while [ $# -gt 0 ]; do").expect("the argument loop");
    let end = source[start..].find("\ndone\n").expect("its end") + start;
    let mut flags = BTreeSet::new();
    for line in source[start..end].lines().map(str::trim) {
        if let Some(pattern) = line.strip_suffix(')').filter(|p| p.starts_with('-')) {
            for flag in pattern.split('|').map(str::trim) {
                if flag.starts_with('-') && flag != "--" && flag != "-*" {
                    flags.insert(flag.to_string());
                }
            }
        }
    }
    flags
}

/// The flags in the option lines of a usage text (lines starting with two
/// spaces and a dash).
fn option_line_flags(help: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = help.lines().filter(|l| l.starts_with("  -")).collect();
    help_flags(&lines.join("\n"))
}

#[test]
fn the_wrapper_its_help_and_its_man_page_name_the_same_options() {
    let parser = wrapper_flags();
    assert!(parser.len() >= 14 && parser.contains("--container-user"), "extraction: {parser:?}");
    let out = Command::new("bash").arg(repo("contrib/llxprt-sandbox")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = option_line_flags(&stdout(&out));
    let man: BTreeSet<String> =
        man_flags(&read("man/llxprt-sandbox.1")).into_iter().map(|(f, _)| f).collect();
    assert_eq!(help, parser, "llxprt-sandbox --help and its argument loop");
    assert_eq!(man, parser, "llxprt-sandbox.1 and the argument loop");
}

/// The ```sh blocks of a README section (from its `## ` heading to the next).
fn sh_lines(readme: &str, heading: &str) -> Vec<String> {
    let start = readme.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("README has no {heading}"));
    let end = readme[start + 1..].find("\n## ").map_or(readme.len(), |i| i + start + 1);
    let mut lines = Vec::new();
    let mut inside = false;
    for line in readme[start..end].lines() {
        match line.trim() {
            "```sh" => inside = true,
            "```" => inside = false,
            l if inside && !l.is_empty() && !l.starts_with('#') => lines.push(l.to_string()),
            _ => {}
        }
    }
    lines
}

#[test]
fn readme_quick_start_and_troubleshooting_commands_are_real() {
    let readme = read("README.md");
    let makefile = read("Makefile");
    let credd = table_flags(llxprt_credd::cli::credd::FLAGS);
    let cred = table_flags(llxprt_credd::cli::cred::FLAGS);
    let cred_words = cred_words();
    let wrapper = wrapper_flags();
    let mut checked = 0;
    for heading in ["## Quick start", "## Troubleshooting"] {
        for line in sh_lines(&readme, heading) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let words = if words[0] == "sudo" { &words[1..] } else { &words[..] };
            // Our commands' own flags come before a `--` (after it: the
            // engine's run arguments or the exec-mode command).
            let ours: Vec<&str> = words[1..].iter().copied().take_while(|w| *w != "--").collect();
            let flags = ours.iter().filter(|w| w.starts_with('-')).map(|w| w.split('=').next().unwrap());
            match words[0] {
                "llxprt-credd" => {
                    for flag in flags {
                        assert!(credd.contains(flag), "README: llxprt-credd has no {flag}: {line}");
                    }
                }
                "llxprt-cred" => {
                    for flag in flags {
                        assert!(cred.contains(flag), "README: llxprt-cred has no {flag}: {line}");
                    }
                    let command = ours.iter().find(|w| cred_words.contains(**w));
                    assert!(command.is_some(), "README: no llxprt-cred command in: {line}");
                }
                "llxprt-sandbox" => {
                    assert!(words.contains(&"--"), "README: give the run arguments after --: {line}");
                    for flag in flags {
                        assert!(wrapper.contains(flag), "README: llxprt-sandbox has no {flag}: {line}");
                    }
                }
                "make" => {
                    for target in &words[1..] {
                        assert!(
                            makefile.contains(&format!("\n{target}:")),
                            "README: no make target {target}"
                        );
                    }
                }
                "llxprt" | "apt" | "apt-get" | "systemctl" | "export" | "unset" | "ls" | "podman"
                | "docker" => {}
                other => panic!("README: unknown command {other} in: {line}"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} command lines found");
}

#[test]
fn each_cred_command_has_its_own_help() {
    let commands = ["key", "token", "doctor", "status", "get", "get-key", "refresh", "login", "logout"];
    for word in commands {
        for args in [vec![word, "--help"], vec!["help", word]] {
            let out = Command::new(CRED).args(&args).output().unwrap();
            assert!(out.status.success(), "{args:?}");
            let text = stdout(&out);
            assert!(text.starts_with(&format!("Usage: llxprt-cred [OPTIONS] {word} ")), "{args:?}: {text}");
            let entries: Vec<&str> =
                text.lines().filter(|l| l.starts_with("  ") && !l.starts_with("   ")).collect();
            assert!(!entries.is_empty(), "{args:?}: {text}");
            for entry in entries {
                assert_eq!(
                    entry.split_whitespace().next(),
                    Some(word),
                    "{args:?}: only {word}'s lines: {text}"
                );
            }
        }
    }
    // Not a command: the whole help.
    let out = Command::new(CRED).args(["help", "nonsense"]).output().unwrap();
    assert_eq!(stdout(&out), help_of(CRED));
}

/// The text of the `USAGE` constant in a source file.
fn usage_const(source: &str) -> &str {
    let start = source.find("const USAGE: &str = \"").expect("a USAGE constant");
    let end = source[start..].find("\n\";\n").expect("its end") + start;
    &source[start..end]
}

#[test]
fn bench_commands_in_its_help_the_docs_and_the_scripts_are_real() {
    let source = read("benches/credd/main.rs");
    let words = parser_words(&source);
    let flags = parser_flags(&source);
    let usage = usage_const(&source);
    assert!(words.len() == 5 && flags.contains("--iterations"), "extraction: {words:?} {flags:?}");
    for word in &words {
        assert!(usage.contains(&format!("\n  {word} ")), "benchmark {word} is not in its --help");
    }
    for flag in flags.iter().filter(|f| *f != "--bench") {
        assert!(usage.contains(flag.as_str()), "the bench accepts {flag}, which its --help does not show");
    }
    for flag in help_flags(usage) {
        assert!(flags.contains(&flag), "the bench's --help shows {flag}, which it does not accept");
    }
    // Every place that runs a benchmark names one the bench accepts, with
    // flags it accepts; none runs the old `llxprt-cred bench`.
    let mut files = vec!["README.md".to_string(), "Makefile".to_string()];
    for dir in ["docs", "scripts", "man"] {
        for entry in std::fs::read_dir(repo(dir)).unwrap().flatten() {
            files.push(format!("{dir}/{}", entry.file_name().to_string_lossy()));
        }
    }
    let mut runs = 0;
    for file in &files {
        let Ok(text) = std::fs::read_to_string(repo(file)) else { continue };
        assert!(!text.contains("llxprt-cred bench"), "{file} still runs llxprt-cred bench");
        for line in text.lines() {
            let Some((_, rest)) = line.split_once("--bench credd -- ") else { continue };
            let mut tokens = rest.split_whitespace();
            let first = tokens.next().unwrap_or_default();
            for name in first.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '|').split('|') {
                let placeholder = name.chars().all(|c| c.is_ascii_uppercase());
                assert!(placeholder || words.contains(name), "{file}: no benchmark {name}: {line}");
            }
            for token in tokens {
                let flag = token.trim_start_matches('[');
                if flag.starts_with("--") {
                    let flag = flag.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
                    assert!(flags.contains(flag), "{file}: the bench has no {flag}: {line}");
                }
                if token.contains('`') {
                    break;
                }
            }
            runs += 1;
        }
    }
    assert!(runs >= 8, "only {runs} bench command lines found");
    // CI builds and runs it (a few samples of the quickest benchmarks).
    let tests = read("scripts/run-tests.sh");
    for word in ["store", "daemon"] {
        assert!(tests.contains(&format!("--bench credd -- {word} ")), "run-tests.sh runs no {word} bench");
    }
}
