//! The guides as tests: the shell blocks of README.md and controller/deploy/README.md that can
//! run here are marked, and run as they are written, so a renamed flag or a wrong path fails
//! the suite instead of a user.
//!
//! A block is marked by an HTML comment on the line before its fence (invisible when rendered):
//!
//! ```text
//! <!-- test: local -->                      runs on this machine (tests/tests/guides.rs)
//! <!-- test: cluster -->                    runs against the real control plane, kubectl
//!                                           pointing at it (tests/tests/cluster_install.rs)
//! <!-- test: cluster, retry 60 -->          runs again until it succeeds, up to 60 s (it
//!                                           reads what a controller writes a moment later)
//! <!-- test: local, background until F -->  a long-running command: passes when it has
//!                                           written F and still runs; then it is stopped
//! ```
//!
//! Blocks run with `bash -euo pipefail`, in a scratch copy of the repository's files (tracked
//! and untracked, not ignored: what a fresh clone has, plus the edit under test), so a block
//! that writes files leaves the work tree alone. `cargo run -q -p modelsplit-controller -- ARGS`
//! runs the already built `modelsplit` (`$MODELSPLIT_BIN`): the suite never starts a nested
//! cargo build; the filter module the README's `scripts/build-wasm.sh` built is linked into the
//! copy's `target/`. Unmarked blocks (building and pushing images, waiting for pods, calls through a
//! TLS gateway) are listed in docs/testing.md with the reason each cannot run here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where a marked block runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    Cluster,
}

/// One marked shell block of a guide.
#[derive(Debug, Clone)]
pub struct Block {
    /// The guide, relative to the repository root.
    pub file: String,
    /// Line of the opening fence (1-based).
    pub line: usize,
    pub kind: Kind,
    pub text: String,
    /// `retry N`: run again until it succeeds, for up to N seconds.
    pub retry: Option<Duration>,
    /// `background until PATH`: a command that keeps running; passes once PATH exists.
    pub until: Option<String>,
}

impl Block {
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// The guides whose blocks the suite runs.
pub const GUIDES: &[&str] = &["README.md", "controller/deploy/README.md"];

/// The marked blocks of `guide` (relative to the repository root), in order.
pub fn blocks(guide: &str) -> Vec<Block> {
    let path = repo_root().join(guide);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse(guide, &text)
}

/// The marked blocks of every guide of one kind.
pub fn blocks_of(kind: Kind) -> Vec<Block> {
    GUIDES
        .iter()
        .flat_map(|guide| blocks(guide))
        .filter(|b| b.kind == kind)
        .collect()
}

/// Parses the marked blocks of a markdown text; panics on a malformed marker, so a typo in
/// one cannot silently drop a block from the suite.
pub fn parse(file: &str, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let Some(spec) = line
            .strip_prefix("<!-- test:")
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            i += 1;
            continue;
        };
        let at = format!("{file}:{}", i + 1);
        let mut parts = spec.split(',').map(str::trim);
        let kind = match parts.next() {
            Some("local") => Kind::Local,
            Some("cluster") => Kind::Cluster,
            other => panic!("{at}: unknown test marker kind {other:?} (local or cluster)"),
        };
        let (mut retry, mut until) = (None, None);
        for option in parts {
            let words: Vec<&str> = option.split_whitespace().collect();
            match words.as_slice() {
                ["retry", seconds] => {
                    let seconds: u64 = seconds
                        .parse()
                        .unwrap_or_else(|_| panic!("{at}: retry needs seconds, got {seconds:?}"));
                    retry = Some(Duration::from_secs(seconds));
                }
                ["background", "until", path] => until = Some(path.to_string()),
                _ => panic!("{at}: unknown test marker option {option:?}"),
            }
        }
        let fence = lines.get(i + 1).map(|l| l.trim()).unwrap_or_default();
        assert!(
            matches!(fence, "```shell" | "```sh" | "```bash"),
            "{at}: a test marker must be followed by a ```shell fence, found {fence:?}"
        );
        let start = i + 2;
        let end = (start..lines.len())
            .find(|&j| lines[j].trim() == "```")
            .unwrap_or_else(|| panic!("{at}: the block is never closed"));
        out.push(Block {
            file: file.to_string(),
            line: i + 2,
            kind,
            text: lines[start..end].join("\n") + "\n",
            retry,
            until,
        });
        i = end + 1;
    }
    out
}

/// What a finished block printed.
#[derive(Debug, Clone)]
pub struct Ran {
    pub stdout: String,
    pub stderr: String,
}

/// Runs guide blocks in a scratch copy of the repository.
pub struct Runner {
    pub root: PathBuf,
    env: Vec<(String, String)>,
    path: Vec<PathBuf>,
    _scratch: tempfile::TempDir,
}

/// Prepended to every block: `cargo run` of the controller runs the built binary.
const PRELUDE: &str = r#"
cargo() {
  if [ "${1:-}" = run ] && [ "${2:-}" = -q ] && [ "${3:-}" = -p ] && [ "${4:-}" = modelsplit-controller ] && [ "${5:-}" = -- ]; then
    shift 5
    $GUIDE_EXEC "$MODELSPLIT_BIN" "$@"
  else
    echo "guide test: only 'cargo run -q -p modelsplit-controller -- ...' runs here (the suite builds once, up front)" >&2
    return 97
  fi
}
"#;

impl Runner {
    /// A scratch copy of the repository's files (what `git ls-files` lists, tracked or new).
    pub fn new() -> Runner {
        let root = repo_root();
        let scratch = tempfile::Builder::new()
            .prefix("modelsplit-guide-")
            .tempdir()
            .expect("scratch dir");
        let listed = Command::new("git")
            .arg("-C")
            .arg(&root)
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ])
            .output()
            .expect("git ls-files (the guide tests copy the repository's files)");
        assert!(
            listed.status.success(),
            "git ls-files: {}",
            String::from_utf8_lossy(&listed.stderr)
        );
        for name in listed.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let name = String::from_utf8_lossy(name).into_owned();
            let from = root.join(&name);
            if !from.is_file() {
                continue; // deleted in the work tree
            }
            let to = scratch.path().join(&name);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(&from, &to)
                .unwrap_or_else(|e| panic!("copy {} to the scratch copy: {e}", from.display()));
        }
        // What the README's earlier, unmarked `scripts/build-wasm.sh` produced.
        let wasm = crate::gateway::filter_wasm_path();
        if wasm.is_file() {
            let to = scratch.path().join(crate::gateway::WASM_RELATIVE_PATH);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::os::unix::fs::symlink(&wasm, &to).expect("link the built filter module");
        }
        Runner {
            root: scratch.path().to_path_buf(),
            env: vec![(
                "MODELSPLIT_BIN".to_string(),
                crate::cluster::controller::modelsplit_binary()
                    .display()
                    .to_string(),
            )],
            path: Vec::new(),
            _scratch: scratch,
        }
    }

    /// Sets a variable for every block (what an unmarked earlier block would have set).
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Runner {
        self.env.push((name.to_string(), value.into()));
        self
    }

    /// Puts `dir` first on PATH (e.g. the control plane's kubectl).
    pub fn path_first(mut self, dir: &Path) -> Runner {
        self.path.push(dir.to_path_buf());
        self
    }

    fn command(&self, block: &Block, exec: bool) -> Command {
        let mut command = Command::new("bash");
        command
            .args(["-euo", "pipefail", "-c"])
            .arg(format!("{PRELUDE}\n{}", block.text))
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .env("GUIDE_EXEC", if exec { "exec" } else { "" });
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let mut path = self.path.clone();
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        command.env("PATH", std::env::join_paths(path).expect("PATH"));
        command
    }

    /// Runs a block once; Err with what it printed when it fails.
    pub fn try_run(&self, block: &Block) -> Result<Ran, String> {
        let output = self
            .command(block, false)
            .output()
            .unwrap_or_else(|e| panic!("cannot run bash: {e}"));
        let ran = Ran {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        if output.status.success() {
            Ok(ran)
        } else {
            Err(format!(
                "{} ({}):\n--- stdout\n{}--- stderr\n{}",
                block.at(),
                output.status,
                ran.stdout,
                ran.stderr
            ))
        }
    }

    /// Runs a block as its marker says (once, with retries, or in the background); panics,
    /// naming the guide's line and showing the block, when it fails.
    pub fn run(&self, block: &Block) -> Ran {
        eprintln!("guide block {}:\n{}", block.at(), block.text);
        let fail = |why: String| -> ! {
            panic!(
                "the guide's block at {} failed:\n{}\n{why}",
                block.at(),
                block.text
            )
        };
        if let Some(until) = &block.until {
            return self
                .run_background(block, until)
                .unwrap_or_else(|e| fail(e));
        }
        let deadline = Instant::now() + block.retry.unwrap_or_default();
        loop {
            match self.try_run(block) {
                Ok(ran) => return ran,
                Err(why) if Instant::now() >= deadline => fail(why),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    fn run_background(&self, block: &Block, until: &str) -> Result<Ran, String> {
        use std::os::unix::process::CommandExt;
        let log = self.root.join(format!(".guide-{}.log", block.line));
        let file = std::fs::File::create(&log).expect("block log");
        let mut child = self
            .command(block, true)
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run bash: {e}"));
        let stop = |child: &mut std::process::Child| {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        };
        let target = self.root.join(until);
        let deadline = Instant::now() + Duration::from_secs(60);
        let result = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Err(format!("it exited ({status}) before writing {until}"));
            }
            if target.exists() {
                // Written, and still running a moment later: it did not stop on an error.
                std::thread::sleep(Duration::from_millis(500));
                break match child.try_wait() {
                    Ok(Some(status)) => Err(format!("it exited ({status}) after writing {until}")),
                    _ => Ok(()),
                };
            }
            if Instant::now() > deadline {
                break Err(format!("{until} was not written within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        stop(&mut child);
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        result
            .map(|()| Ran {
                stdout: output.clone(),
                stderr: String::new(),
            })
            .map_err(|why| format!("{why}; it printed:\n{output}"))
    }
}

impl Default for Runner {
    fn default() -> Self {
        Runner::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_select_blocks_with_their_options() {
        let text = "intro\n\n```shell\nnot marked\n```\n\n<!-- test: local -->\n```shell\necho one\necho two\n```\n\
                    <!-- test: cluster, retry 30 -->\n```sh\nkubectl get x\n```\n\
                    <!-- test: local, background until out/f.json -->\n```bash\nserve\n```\n";
        let blocks = parse("G.md", text);
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0].kind, Kind::Local);
        assert_eq!(blocks[0].text, "echo one\necho two\n");
        assert_eq!(blocks[0].at(), "G.md:8");
        assert_eq!(blocks[1].kind, Kind::Cluster);
        assert_eq!(blocks[1].retry, Some(Duration::from_secs(30)));
        assert_eq!(blocks[2].until.as_deref(), Some("out/f.json"));
    }

    #[test]
    #[should_panic(expected = "must be followed by a ```shell fence")]
    fn a_marker_without_a_block_is_an_error() {
        parse("G.md", "<!-- test: local -->\n\ntext\n");
    }

    #[test]
    #[should_panic(expected = "unknown test marker option")]
    fn an_unknown_option_is_an_error() {
        parse("G.md", "<!-- test: local, retyr 3 -->\n```shell\nx\n```\n");
    }

    #[test]
    #[should_panic(expected = "unknown test marker kind")]
    fn an_unknown_kind_is_an_error() {
        parse("G.md", "<!-- test: clsuter -->\n```shell\nx\n```\n");
    }
}
