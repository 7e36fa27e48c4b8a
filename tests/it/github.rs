//! The GitHub broker (SPEC §13) against a fake `gh` first on the daemon's
//! `PATH`: a Perl program that records each call (argv, environment, the
//! body file's content and mode) under its own directory and answers from
//! reply files the test writes (`reply/SUB_CMD.{out,err,code,sleep}`).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

const FAKE_GH: &str = r#"#!/usr/bin/perl
use strict; use warnings; use File::Basename qw(dirname);
my $here = dirname($0);
mkdir "$here/calls";
my $rec = "$here/calls/$$";
open(my $a, '>', "$rec.argv.tmp") or die; print $a join("\0", @ARGV); close $a;
open(my $e, '>', "$rec.env") or die; print $e join("\0", map { "$_=$ENV{$_}" } sort keys %ENV); close $e;
for my $i (0 .. $#ARGV - 1) {
  next unless $ARGV[$i] eq '--body-file';
  my $p = $ARGV[$i + 1];
  open(my $b, '<', $p) or die "body: $!"; local $/; my $body = <$b>; close $b;
  open(my $o, '>', "$rec.body") or die; print $o $body; close $o;
  open(my $m, '>', "$rec.bodymode") or die; printf $m "%o", (stat $p)[2] & 07777; close $m;
  open(my $q, '>', "$rec.bodypath") or die; print $q $p; close $q;
}
rename "$rec.argv.tmp", "$rec.argv";
my $key = join('_', grep { defined } @ARGV[0, 1]);
my $r = "$here/reply/$key";
sub slurp { my $f = shift; open(my $h, '<', $f) or return undef; local $/; my $t = <$h>; close $h; return $t; }
my $sleep = slurp("$r.sleep"); sleep($sleep) if defined $sleep;
my $err = slurp("$r.err"); print STDERR $err if defined $err;
my $out = slurp("$r.out"); print $out if defined $out;
my $code = slurp("$r.code"); exit(defined $code ? $code : 0);
"#;

/// A fake `gh` in its own directory.
struct FakeGh {
    bin: PathBuf,
}

/// One recorded call.
#[derive(Debug)]
struct Call {
    pid: i32,
    argv: Vec<String>,
    env: HashMap<String, String>,
    body: Option<String>,
    body_mode: Option<String>,
    body_path: Option<String>,
}

impl FakeGh {
    fn new(dir: &TestDir) -> FakeGh {
        let bin = dir.root.join("fake-gh-bin");
        std::fs::create_dir_all(bin.join("reply")).unwrap();
        let gh = bin.join("gh");
        std::fs::write(&gh, FAKE_GH).unwrap();
        std::fs::set_permissions(&gh, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeGh { bin }
    }

    /// What `gh SUB CMD ...` answers from now on.
    fn reply(&self, sub_cmd: &str, out: &str, err: &str, code: i32) {
        let base = self.bin.join("reply").join(sub_cmd.replace(' ', "_"));
        std::fs::write(base.with_extension("out"), out).unwrap();
        std::fs::write(base.with_extension("err"), err).unwrap();
        std::fs::write(base.with_extension("code"), code.to_string()).unwrap();
    }

    fn slow(&self, sub_cmd: &str, seconds: u32) {
        let base = self.bin.join("reply").join(sub_cmd.replace(' ', "_"));
        std::fs::write(base.with_extension("sleep"), seconds.to_string()).unwrap();
    }

    /// Every call so far, oldest first; and forgets them.
    fn take_calls(&self) -> Vec<Call> {
        let dir = self.bin.join("calls");
        let mut calls: Vec<(std::time::SystemTime, Call)> = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_suffix(".argv") else { continue };
            let read = |ext: &str| std::fs::read_to_string(dir.join(format!("{pid}.{ext}"))).ok();
            let argv = read("argv").unwrap_or_default();
            let env = read("env").unwrap_or_default();
            let call = Call {
                pid: pid.parse().unwrap(),
                argv: if argv.is_empty() { vec![] } else { argv.split('\0').map(str::to_owned).collect() },
                env: env
                    .split('\0')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                body: read("body"),
                body_mode: read("bodymode"),
                body_path: read("bodypath"),
            };
            calls.push((entry.metadata().unwrap().modified().unwrap(), call));
        }
        let _ = std::fs::remove_dir_all(&dir);
        calls.sort_by_key(|(t, c)| (*t, c.pid));
        calls.into_iter().map(|(_, c)| c).collect()
    }

    /// `PATH` with the fake first.
    fn path(&self) -> String {
        format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default())
    }
}

fn daemon(dir: &TestDir, gh: &FakeGh, args: &[&str], env: &[(&str, &str)]) -> Daemon {
    let path = gh.path();
    let mut all_env = vec![("PATH", path.as_str())];
    all_env.extend_from_slice(env);
    let mut all_args = vec!["--allow-key", "K"];
    all_args.extend_from_slice(args);
    dir.daemon_with_env(&all_args, &all_env)
}

fn seeded(name: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.set_key("K", "sk-PLANTED-gh");
    dir
}

fn github(c: &mut Raw, payload: Value) -> Value {
    c.request("github", payload)
}

fn strs(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn read_operations_run_their_gh_invocations_and_shape_the_output() {
    let dir = seeded("gh-read");
    let gh = FakeGh::new(&dir);
    let d = daemon(&dir, &gh, &[], &[]);
    let mut c = d.connect();
    c.handshake();

    gh.reply(
        "issue view",
        r#"{"number":7,"title":"T","state":"OPEN","author":{"login":"ann"},"labels":[{"name":"bug"},{"name":""}],
           "body":"B","comments":[{"author":{"login":"bob"},"createdAt":"2026-01-01","body":"C","extra":1}],"extra":2}"#,
        "",
        0,
    );
    let r = github(&mut c, json!({"op":"issue.view","number":7,"comments":true,"repo":"o/r"}));
    assert_eq!(
        r["data"],
        json!({"number":7,"title":"T","state":"OPEN","author":"ann","labels":["bug"],"body":"B",
            "comments":[{"author":"bob","createdAt":"2026-01-01","body":"C"}]})
    );
    let calls = gh.take_calls();
    assert_eq!(
        calls[0].argv,
        strs(&[
            "issue",
            "view",
            "7",
            "--json",
            "number,title,state,author,labels,body,comments",
            "--repo",
            "o/r"
        ])
    );

    gh.reply(
        "issue list",
        r#"[{"number":1,"title":"a","state":"OPEN","labels":[],"updatedAt":"u","body":"never"}]"#,
        "",
        0,
    );
    let r = github(
        &mut c,
        json!({"op":"issue.list","search":"crash","state":"open","label":["x","y"],"limit":5}),
    );
    assert_eq!(
        r["data"],
        json!({"issues":[{"number":1,"title":"a","state":"OPEN","labels":[],"updatedAt":"u"}]})
    );
    assert_eq!(
        gh.take_calls()[0].argv,
        strs(&[
            "issue",
            "list",
            "--json",
            "number,title,state,labels,updatedAt",
            "--search",
            "crash",
            "--state",
            "open",
            "--label",
            "x",
            "--label",
            "y",
            "--limit",
            "5"
        ])
    );

    gh.reply(
        "pr view",
        r#"{"number":3,"title":"P","state":"OPEN","author":"ann","isDraft":true,"headRefName":"h"}"#,
        "",
        0,
    );
    let r = github(&mut c, json!({"op":"pr.view","number":3}));
    assert_eq!(
        r["data"],
        json!({"number":3,"title":"P","state":"OPEN","author":"ann","labels":[],"body":"","isDraft":true,
            "reviewDecision":"","headRefName":"h","baseRefName":"","comments":null})
    );
    assert_eq!(
        gh.take_calls()[0].argv,
        strs(&[
            "pr",
            "view",
            "3",
            "--json",
            "number,title,state,author,body,labels,isDraft,reviewDecision,headRefName,baseRefName"
        ])
    );

    gh.reply("pr list", "[]", "", 0);
    assert_eq!(github(&mut c, json!({"op":"pr.list","state":"merged"}))["data"], json!({"prs":[]}));
    assert_eq!(
        gh.take_calls()[0].argv,
        strs(&[
            "pr",
            "list",
            "--json",
            "number,title,state,labels,updatedAt",
            "--state",
            "merged",
            "--limit",
            "30"
        ])
    );

    let big = "x".repeat(70_000);
    gh.reply("pr diff", &big, "", 0);
    let r = github(&mut c, json!({"op":"pr.diff","number":3}));
    assert_eq!(r["code"], "RESPONSE_TOO_LARGE", "a 64 KiB diff does not fit version 1");
    let mut v2 = d.connect();
    v2.handshake_v2();
    let r = github(&mut v2, json!({"op":"pr.diff","number":3}));
    assert!(r["data"]["diff"].as_str().unwrap().ends_with("\n...[truncated]"));
    assert_eq!(r["data"]["truncated"], json!({"field":"diff","originalBytes":70_000}));
    gh.take_calls();

    // gh pr checks exits 8 while checks are pending: not an error
    gh.reply("pr checks", r#"[{"name":"ci","state":"PENDING","bucket":"pending","link":"l"},{"name":"lint","state":"SUCCESS","bucket":"pass","link":"m"}]"#, "", 8);
    let r = github(&mut c, json!({"op":"pr.checks","number":3,"repo":"o/r"}));
    assert_eq!(r["data"]["summary"], json!({"pass":1,"fail":0,"pending":1,"skipping":0}), "{r}");
    assert_eq!(
        gh.take_calls()[0].argv,
        strs(&["pr", "checks", "3", "--json", "name,state,bucket,link", "--repo", "o/r"])
    );

    gh.reply(
        "api graphql",
        r#"{"data":{"repository":{"pullRequest":{"reviewThreads":{"nodes":[
            {"id":"T1","isResolved":false,"isOutdated":false,"path":"a.rs","line":3,"viewerCanResolve":true,"comments":{"nodes":[{"author":{"login":"ann"},"body":"fix"}]}},
            {"id":"T2","isResolved":true,"isOutdated":false,"path":"b.rs","line":null,"viewerCanResolve":true,"comments":{"nodes":[]}}]}}}}}"#,
        "",
        0,
    );
    let r = github(&mut c, json!({"op":"pr.reviews","number":3,"repo":"o/r","actionable":true}));
    assert_eq!(
        r["data"],
        json!({"threads":[{"id":"T1","path":"a.rs","line":3,"isResolved":false,"isOutdated":false,"viewerCanResolve":true,
            "comments":[{"author":"ann","body":"fix"}]}],"truncated":false})
    );
    let argv = &gh.take_calls()[0].argv;
    assert_eq!(&argv[..2], strs(&["api", "graphql"]));
    assert!(
        argv.contains(&"owner=o".to_owned())
            && argv.contains(&"number=3".to_owned())
            && argv.contains(&"first=50".to_owned())
    );

    gh.reply(
        "search issues",
        r#"[{"number":9,"title":"s","state":"OPEN","repository":{"nameWithOwner":"o/r"},"updatedAt":"u"}]"#,
        "",
        0,
    );
    let r = github(&mut c, json!({"op":"search.issues","query":"is:open crash","limit":3}));
    assert_eq!(r["data"]["issues"][0]["repository"], "o/r");
    assert_eq!(
        gh.take_calls()[0].argv,
        strs(&[
            "search",
            "issues",
            "is:open crash",
            "--json",
            "number,title,state,repository,updatedAt",
            "--limit",
            "3"
        ])
    );

    gh.reply("search prs", "{}", "", 0);
    let r = github(&mut c, json!({"op":"search.prs","query":"x"}));
    assert_eq!(
        (r["code"].clone(), r["error"].clone()),
        (json!("GITHUB_ERROR"), json!("search: expected a list from gh but received object"))
    );
    gh.take_calls();

    gh.reply("run list", r#"[{"databaseId":5,"name":"CI","status":"completed","conclusion":"success","headBranch":"main","createdAt":"c"}]"#, "", 0);
    let r = github(&mut c, json!({"op":"run.list","branch":"main"}));
    assert_eq!(r["data"]["runs"][0]["databaseId"], 5);
    assert_eq!(
        gh.take_calls()[0].argv,
        strs(&[
            "run",
            "list",
            "--json",
            "databaseId,name,status,conclusion,headBranch,createdAt",
            "--limit",
            "30",
            "--branch",
            "main"
        ])
    );

    gh.reply("label list", r#"[{"name":"bug","color":"f00","description":"d"}]"#, "", 0);
    assert_eq!(
        github(&mut c, json!({"op":"label.list"}))["data"],
        json!({"labels":[{"name":"bug","color":"f00","description":"d"}]})
    );
    gh.take_calls();
    // the audit line names the operation and the repository only
    let log = d.log_text();
    assert!(log.contains("op=github target=issue.view repo=o/r outcome=ok"), "{log}");
    assert!(!log.contains("crash"), "no query text in the log");
}

#[test]
fn write_operations_need_the_permit_and_send_bodies_through_private_files() {
    let dir = seeded("gh-write");
    let gh = FakeGh::new(&dir);
    let refused = daemon(&dir, &gh, &[], &[]);
    let mut c = refused.connect();
    c.handshake();
    let r = github(&mut c, json!({"op":"issue.create","title":"t","body":"b"}));
    assert_eq!(
        (r["code"].clone(), r["error"].clone()),
        (
            json!("FORBIDDEN"),
            json!(
                "Operation issue.create is not permitted for the sandbox; the host can allow it with --permit github-write"
            )
        )
    );
    assert!(gh.take_calls().is_empty(), "no gh without the permit");
    drop(c);

    let d = daemon(&dir, &gh, &["--permit", "github-write"], &[]);
    let mut c = d.connect();
    c.handshake();
    gh.reply("issue create", "https://github.com/o/r/issues/12\n", "", 0);
    let body = "## Steps\n- run `rm -rf ~`\n$(id)\n";
    let r = github(
        &mut c,
        json!({"op":"issue.create","title":"; rm -rf ~","body":body,"label":["bug"],"repo":"o/r"}),
    );
    assert_eq!(r["data"], json!({"url":"https://github.com/o/r/issues/12","number":12}), "{r}");
    let call = gh.take_calls().remove(0);
    let path = call.body_path.clone().unwrap();
    assert_eq!(
        call.argv,
        strs(&[
            "issue",
            "create",
            "--title",
            "; rm -rf ~",
            "--body-file",
            &path,
            "--label",
            "bug",
            "--repo",
            "o/r"
        ])
    );
    assert_eq!((call.body.as_deref(), call.body_mode.as_deref()), (Some(body), Some("600")));
    assert!(!Path::new(&path).exists() && !Path::new(&path).parent().unwrap().exists(), "removed afterwards");
    // removed when gh fails too
    gh.reply("issue create", "", "HTTP 403: Resource not accessible by integration", 1);
    let r = github(&mut c, json!({"op":"issue.create","title":"t","body":"b"}));
    assert_eq!(r["code"], "PERMISSION_DENIED");
    let failed = gh.take_calls().remove(0).body_path.unwrap();
    assert!(!Path::new(&failed).exists(), "removed after a failure");
    assert!(
        path.contains("capability/gh-body-") || path.contains("capability-"),
        "beside the capability file, not in a tmpdir: {path}"
    );

    for (op, sub, payload, argv_tail, data) in [
        (
            "issue.comment",
            "issue comment",
            json!({"number":4,"body":"hi"}),
            vec!["issue", "comment", "4"],
            json!({"url":"U"}),
        ),
        (
            "pr.comment",
            "pr comment",
            json!({"number":5,"body":"hi"}),
            vec!["pr", "comment", "5"],
            json!({"url":"U"}),
        ),
        (
            "issue.close",
            "issue close",
            json!({"number":4,"reason":"not planned"}),
            vec!["issue", "close", "4", "--reason", "not planned"],
            json!({"number":4,"state":"closed"}),
        ),
        ("pr.ready", "pr ready", json!({"number":5}), vec!["pr", "ready", "5"], json!({"number":5})),
        (
            "label.create",
            "label create",
            json!({"name":"l","color":"#fff","force":true}),
            vec!["label", "create", "l", "--color", "#fff", "--force"],
            json!({"name":"l"}),
        ),
        (
            "pr.create",
            "pr create",
            json!({"title":"T","body":"hi","base":"main","head":"feat","draft":true}),
            vec!["pr", "create", "--title", "T"],
            json!({"url":"U","number":null}),
        ),
        (
            "pr.edit",
            "pr edit",
            json!({"number":5,"addLabel":"x","milestone":"m"}),
            vec!["pr", "edit", "5", "--add-label", "x", "--milestone", "m"],
            json!({"number":5}),
        ),
    ] {
        gh.reply(sub, "U\n", "", 0);
        let mut p = payload.clone();
        p["op"] = json!(op);
        let r = github(&mut c, p);
        assert_eq!(r["data"], data, "{op}: {r}");
        let call = gh.take_calls().remove(0);
        let expected: Vec<String> = strs(&argv_tail);
        assert_eq!(&call.argv[..expected.len()], expected.as_slice(), "{op}");
        if payload.get("body").is_some() {
            assert_eq!(call.body.as_deref(), Some("hi"), "{op}");
            assert_eq!(call.argv[expected.len()], "--body-file", "{op}");
        }
        if op == "pr.create" {
            assert_eq!(&call.argv[6..], strs(&["--base", "main", "--head", "feat", "--draft"]).as_slice());
        }
    }

    // issue.edit with a type: the CLI edit, then the type through GraphQL
    gh.reply("issue edit", "", "", 0);
    gh.reply("api graphql", r#"{"data":{"repository":{"issueTypes":{"nodes":[{"id":"IT_1","name":"Bug"}]},"issue":{"id":"I_9"}},"updateIssue":{"issue":{"number":4}}}}"#, "", 0);
    let r = github(&mut c, json!({"op":"issue.edit","number":4,"title":"new","type":"bug","repo":"o/r"}));
    assert_eq!(r["data"], json!({"number":4,"type":"bug"}), "{r}");
    let calls = gh.take_calls();
    assert_eq!(calls.len(), 4, "edit, types, issue id, mutation");
    assert_eq!(calls[0].argv, strs(&["issue", "edit", "4", "--title", "new", "--repo", "o/r"]));
    assert!(
        calls[3].argv.contains(&"typeId=IT_1".to_owned()) && calls[3].argv.contains(&"id=I_9".to_owned())
    );
    let r = github(&mut c, json!({"op":"issue.edit","number":4,"type":"epic","repo":"o/r"}));
    assert_eq!(
        (r["code"].clone(), r["error"].clone()),
        (json!("INVALID_PARAM"), json!("Unknown issue type \"epic\". Available types: Bug"))
    );
    gh.take_calls();

    gh.reply(
        "api graphql",
        r#"{"data":{"resolveReviewThread":{"thread":{"id":"T1","isResolved":true}}}}"#,
        "",
        0,
    );
    let r = github(&mut c, json!({"op":"pr.resolve-thread","threadId":"T1"}));
    assert_eq!(r["data"], json!({"threadId":"T1","isResolved":true}));
    // a watch needs a connection it can be cancelled on
    let r = github(&mut c, json!({"op":"pr.checks","number":1,"watch":true}));
    assert_eq!(r["code"], "INVALID_PARAM", "{r}");
    let log = d.log_text();
    assert!(!log.contains("rm -rf") && !log.contains("## Steps"), "no title or body in the log");
}

#[test]
fn invalid_requests_never_run_gh() {
    let dir = seeded("gh-invalid");
    let gh = FakeGh::new(&dir);
    let d = daemon(&dir, &gh, &["--permit", "github-write"], &[]);
    let mut c = d.connect();
    c.handshake();
    for (payload, code, text) in [
        (json!({"op":"issue.delete","number":1}), "UNKNOWN_OP", "Unknown operation: issue.delete"),
        (json!({"number":1}), "UNKNOWN_OP", "Unknown operation: "),
        (
            json!({"op":"issue.view"}),
            "INVALID_PARAM",
            "Missing required parameter: number. Accepted parameters: number, comments, repo. Required: number.",
        ),
        (
            json!({"op":"issue.view","number":1,"__proto__":{}}),
            "INVALID_PARAM",
            "Unknown parameter: __proto__. Accepted parameters: number, comments, repo. Required: number.",
        ),
        (
            json!({"op":"issue.view","number":"1; rm -rf ~"}),
            "INVALID_PARAM",
            "Parameter number must be a positive integer",
        ),
        (
            json!({"op":"issue.view","number":1,"repo":"--help/x"}),
            "INVALID_PARAM",
            "Parameter repo must not begin with '-'",
        ),
        (json!({"op":"issue.list","limit":1000}), "INVALID_PARAM", "Parameter limit must not exceed 100"),
        (
            json!({"op":"pr.resolve-thread","threadId":"$(id)"}),
            "INVALID_PARAM",
            "Parameter threadId contains invalid characters",
        ),
    ] {
        let r = github(&mut c, payload.clone());
        assert_eq!((r["code"].as_str(), r["error"].as_str()), (Some(code), Some(text)), "{payload}");
    }
    assert!(gh.take_calls().is_empty());
}

#[test]
fn gh_gets_a_minimal_environment_and_its_failures_fixed_texts() {
    let dir = seeded("gh-env");
    let gh = FakeGh::new(&dir);
    let d = daemon(
        &dir,
        &gh,
        &[],
        &[
            ("GH_TOKEN", "ghp_PLANTEDdaemonenv0123456789"),
            ("GITHUB_TOKEN", "gho_PLANTEDdaemonenv0123456789"),
            ("OPENAI_API_KEY", "sk-PLANTED-env"),
            ("GH_HOST", "github.example"),
        ],
    );
    let mut c = d.connect();
    c.handshake();
    gh.reply("label list", "[]", "", 0);
    github(&mut c, json!({"op":"label.list"}));
    let env = gh.take_calls().remove(0).env;
    // exactly the broker's set: nothing of the daemon's own environment
    // (its LLXPRT_* and XDG variables, the planted tokens and keys) passes
    let allowed = |k: &str| {
        [
            "PATH",
            "HOME",
            "GH_CONFIG_DIR",
            "XDG_CONFIG_HOME",
            "GH_HOST",
            "GH_PROMPT_DISABLED",
            "GH_NO_UPDATE_NOTIFIER",
            "GH_NO_EXTENSION_UPDATE_NOTIFIER",
        ]
        .contains(&k)
            || k.starts_with("GIT_CONFIG_")
            || k.eq_ignore_ascii_case("http_proxy")
            || k.eq_ignore_ascii_case("https_proxy")
            || k.eq_ignore_ascii_case("no_proxy")
    };
    let extra: Vec<&String> = env.keys().filter(|k| !allowed(k)).collect();
    assert!(extra.is_empty(), "reached gh: {extra:?}");
    assert!(!env.contains_key("GH_TOKEN") && !env.contains_key("GITHUB_TOKEN"));
    assert_eq!(env.get("GIT_CONFIG_COUNT").map(String::as_str), Some("3"), "git in the checkout is defused");
    assert_eq!(env.get("GIT_CONFIG_KEY_0").map(String::as_str), Some("core.fsmonitor"));
    assert_eq!(env.get("GH_HOST").map(String::as_str), Some("github.example"));
    assert_eq!(env.get("GH_PROMPT_DISABLED").map(String::as_str), Some("1"));
    assert_eq!(env.get("GH_NO_UPDATE_NOTIFIER").map(String::as_str), Some("1"));

    let leaked = "ghp_PLANTEDstderr0123456789abcdef";
    for (err, code, text) in [
        (
            format!("HTTP 404: Not Found (token {leaked})"),
            "NOT_FOUND",
            "GitHub reports that the repository, issue or pull request was not found",
        ),
        (
            "To get started with GitHub CLI, please run:  gh auth login".into(),
            "HOST_AUTH_REQUIRED",
            "gh on the host is not logged in to GitHub; the host user must run: gh auth login",
        ),
        (
            "HTTP 403: API rate limit exceeded".into(),
            "RATE_LIMITED",
            "GitHub's rate limit was reached; try again later",
        ),
        (
            "HTTP 403: Resource not accessible by integration".into(),
            "PERMISSION_DENIED",
            "GitHub refused the operation for the host's GitHub account",
        ),
        (
            "something odd at /home/user/.config/gh".into(),
            "GITHUB_ERROR",
            "gh failed on the host (details in the host's log)",
        ),
    ] {
        gh.reply("label list", "", &err, 1);
        let r = github(&mut c, json!({"op":"label.list"}));
        assert_eq!((r["code"].as_str(), r["error"].as_str()), (Some(code), Some(text)), "{err}");
    }
    let log = d.log_text();
    assert!(log.contains("[REDACTED]") && !log.contains(leaked), "redacted in the host log");
    gh.reply("label list", "not json", "", 0);
    assert_eq!(github(&mut c, json!({"op":"label.list"}))["code"], "GITHUB_ERROR");
    gh.take_calls();

    // gh missing
    let bare = dir.daemon_with_env(&["--allow-key", "K"], &[("PATH", "/nonexistent")]);
    let mut c = bare.connect();
    c.handshake();
    let r = github(&mut c, json!({"op":"label.list"}));
    assert_eq!(
        (r["code"].as_str(), r["error"].as_str()),
        (
            Some("HOST_GH_UNAVAILABLE"),
            Some("gh is not installed on the host; the host user must install GitHub CLI")
        )
    );
}

#[test]
fn github_repo_restricts_every_operation_and_no_github_turns_it_off() {
    let dir = seeded("gh-repo");
    let gh = FakeGh::new(&dir);
    let d = daemon(&dir, &gh, &["--github-repo", "o/r", "--permit", "github-write"], &[]);
    let mut c = d.connect();
    c.handshake();
    gh.reply("issue view", r#"{"number":1}"#, "", 0);
    for payload in [
        json!({"op":"issue.view","number":1,"repo":"other/r"}),
        json!({"op":"search.issues","query":"repo:other/r secret"}),
        json!({"op":"search.prs","query":"org:evil x"}),
        json!({"op":"pr.resolve-thread","threadId":"T1"}),
    ] {
        let r = github(&mut c, payload.clone());
        assert_eq!(r["code"], "PERMISSION_DENIED", "{payload}: {r}");
    }
    assert!(gh.take_calls().is_empty(), "nothing ran");
    // the allowed repository, named or filled in (case-insensitively)
    assert_eq!(github(&mut c, json!({"op":"issue.view","number":1,"repo":"O/R"}))["ok"], true);
    assert_eq!(github(&mut c, json!({"op":"issue.view","number":1}))["ok"], true);
    let calls = gh.take_calls();
    assert_eq!(calls[1].argv.last().map(String::as_str), Some("o/r"), "filled in: {:?}", calls[1].argv);

    let off = daemon(&dir, &gh, &["--no-github"], &[]);
    let mut c = off.connect();
    c.handshake();
    let r = github(&mut c, json!({"op":"issue.view","number":1}));
    assert_eq!(
        (r["code"].as_str(), r["error"].as_str()),
        (Some("INVALID_REQUEST"), Some("Unknown operation: github"))
    );
    assert!(gh.take_calls().is_empty());
    let bad =
        dir.credd_start_failing(&["--no-capability", "--allow-key", "K", "--github-repo", "not-a-repo"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

#[test]
fn a_slow_watch_delays_nothing_else_and_cancel_kills_gh() {
    let dir = seeded("gh-watch");
    let gh = FakeGh::new(&dir);
    gh.reply("pr checks", r#"[{"name":"ci","state":"PENDING","bucket":"pending","link":"l"}]"#, "", 8);
    gh.slow("pr checks", 30);
    let d = daemon(&dir, &gh, &[], &[]);
    let mut c = d.connect();
    c.handshake_v2();
    c.send_request("w", "github", json!({"op":"pr.checks","number":3,"watch":true}));
    // gh is running
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid = loop {
        let calls = std::fs::read_dir(gh.bin.join("calls"))
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|e| e.file_name().to_string_lossy().strip_suffix(".argv").map(str::to_owned));
        if let Some(pid) = calls {
            break pid;
        }
        assert!(Instant::now() < deadline, "gh never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let asked = Instant::now();
    c.send_request("k", "has_api_key", json!({"name":"K"}));
    let r = c.recv().unwrap();
    assert_eq!((r["id"].clone(), r["data"]["exists"].clone()), (json!("k"), json!(true)));
    assert!(asked.elapsed() < Duration::from_millis(500), "not delayed: {:?}", asked.elapsed());
    c.send_request("c", "cancel", json!({"targetId":"w"}));
    assert_eq!(c.recv().unwrap()["data"]["cancelled"], true);
    let r = c.recv().unwrap();
    assert_eq!((r["id"].clone(), r["code"].clone()), (json!("w"), json!("CANCELLED")));
    let gone = Instant::now() + Duration::from_secs(3);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < gone, "gh (pid {pid}) survived the cancel");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_watch_polls_until_the_checks_conclude() {
    let dir = seeded("gh-watch-done");
    let gh = FakeGh::new(&dir);
    gh.reply("pr checks", r#"[{"name":"ci","state":"SUCCESS","bucket":"pass","link":"l"}]"#, "", 0);
    let d = daemon(&dir, &gh, &[], &[("LLXPRT_CREDD_TIME_SCALE", "0.01")]);
    let mut c = d.connect();
    c.handshake_v2();
    let r = github(&mut c, json!({"op":"pr.checks","number":3,"watch":true}));
    assert_eq!(
        (r["data"]["concluded"].clone(), r["data"]["cancelled"].clone(), r["data"]["polls"].clone()),
        (json!(true), json!(false), json!(1)),
        "{r}"
    );
    assert_eq!(r["data"]["summary"]["pass"], 1);
}

#[test]
fn doctor_says_whether_gh_is_installed_and_logged_in() {
    let dir = seeded("gh-doctor");
    let gh = FakeGh::new(&dir);
    let doctor = |path: &str| {
        let out = dir.cred(None).env("PATH", path).args(["--store", "file", "doctor"]).output().unwrap();
        stdout(&out)
    };
    gh.reply("--version", "gh version 2.99.0 (2026-11-01)\n", "", 0);
    gh.reply("auth status", "", "", 0);
    assert!(doctor(&gh.path()).contains("github: gh version 2.99.0 (2026-11-01), logged in"));
    gh.reply("auth status", "", "You are not logged into any GitHub hosts.", 1);
    let text = doctor(&gh.path());
    assert!(text.contains("not logged in") && text.contains("gh auth login"), "{text}");
    let text = doctor("/nonexistent");
    assert!(text.contains("gh is not on PATH") && text.contains("HOST_GH_UNAVAILABLE"), "{text}");
}

#[test]
fn an_answer_too_large_for_a_frame_is_an_error_of_the_operation() {
    let dir = seeded("gh-huge");
    let gh = FakeGh::new(&dir);
    let d = daemon(&dir, &gh, &[], &[]);
    let mut c = d.connect();
    c.handshake_v2();
    let body = "b".repeat(4_300_000);
    gh.reply("issue view", &json!({"number":1,"title":"t","body":body}).to_string(), "", 0);
    let r = github(&mut c, json!({"op":"issue.view","number":1}));
    assert_eq!(
        (r["code"].as_str(), r["error"].as_str()),
        (Some("GITHUB_ERROR"), Some("Frame exceeds maximum size"))
    );
    gh.reply("label list", "[]", "", 0);
    assert_eq!(github(&mut c, json!({"op":"label.list"}))["ok"], true, "the connection goes on");
}
