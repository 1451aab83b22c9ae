//! POSIX shell quoting for words embedded in generated script text.
//!
//! kiln writes shell commands into cloud-init `runcmd`/`bootcmd` entries and bootstrap scripts.
//! Any value interpolated there (paths, channels, tokens, user-supplied arguments) must reach the
//! command as exactly one word, unchanged: unquoted, a space splits it, `$` or a backtick runs
//! code, `*` globs and `~` expands. Quoting every value through [`quote`] makes that impossible
//! to forget, and keeps the common case (`/var/snap/microk8s`) readable by leaving safe words bare.

/// Quotes `word` so that a POSIX shell reads it back as exactly one word with this content.
///
/// Returned unchanged when non-empty and made only of `[A-Za-z0-9_./:=@%+,-]`, which no POSIX
/// shell expands or splits in argument position; otherwise wrapped in single quotes, inside which
/// nothing is special, with each `'` written as `'\''` (close quote, escaped quote, reopen).
/// The empty string becomes `''`.
///
/// Intended for arguments: a bare word containing `=` in command position would be read as a
/// variable assignment. A NUL character cannot be passed to a command at all, so words containing
/// one cannot round-trip whatever the quoting.
pub fn quote(word: &str) -> String {
    let is_safe_bare = !word.is_empty()
        && word.chars().all(|character| {
            character.is_ascii_alphanumeric()
                || matches!(
                    character,
                    '_' | '.' | '/' | ':' | '=' | '@' | '%' | '+' | ',' | '-'
                )
        });
    if is_safe_bare {
        return word.to_owned();
    }
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('\'');
    quoted.push_str(&word.replace('\'', r"'\''"));
    quoted.push('\'');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const TRICKY_WORDS: &[&str] = &[
        "",
        "plain",
        "/var/snap/microk8s/current/args",
        "1.28/stable",
        "key=value,other=x",
        "user@host:22",
        "50%",
        "a+b",
        "-n",
        "-e",
        "--",
        "-",
        "--flag=value",
        "two words",
        " leading",
        "trailing ",
        "  ",
        "tab\there",
        "new\nline",
        "trailing newline\n",
        "\n\n",
        "'",
        "''",
        "it's",
        "'quoted'",
        "\"double\"",
        "mixed 'single' and \"double\"",
        "\\",
        "back\\slash\\n",
        "$HOME",
        "${HOME}",
        "$(id)",
        "`id`",
        "$((1+1))",
        "a;b",
        "a&&b",
        "a|b",
        "a>b",
        "<in",
        "(sub)",
        "{a,b}",
        "*",
        "*.conf",
        "?",
        "[abc]",
        "~",
        "~/x",
        "a=~/x",
        "#comment",
        "a #b",
        "!",
        "!!",
        "%s",
        "%%",
        "héllo wörld",
        "日本語",
        "emoji 🚀",
        "\u{1b}[31mred\u{1b}[0m",
        "\r\n",
        "\u{7f}",
    ];

    /// Runs `printf %s <quoted>` in `shell` and returns what it printed, byte for byte.
    fn printed_by(shell: &str, word: &str) -> String {
        let script = format!("printf %s {}", quote(word));
        let output = Command::new(shell)
            .args(["-c", &script])
            .output()
            .unwrap_or_else(|error| panic!("run {shell}: {error}"));
        assert!(
            output.status.success(),
            "{shell} failed on {script:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("printf echoed UTF-8 input")
    }

    #[test]
    fn words_round_trip_through_sh() {
        for word in TRICKY_WORDS {
            assert_eq!(printed_by("sh", word), *word, "quoted as {}", quote(word));
        }
    }

    #[test]
    fn words_round_trip_through_bash_when_available() {
        // bash expands more than POSIX sh (brace expansion, extended tilde rules), so check it
        // too where it exists; sh alone is the contract.
        if Command::new("bash").arg("-c").arg("true").output().is_err() {
            return;
        }
        for word in TRICKY_WORDS {
            assert_eq!(printed_by("bash", word), *word, "quoted as {}", quote(word));
        }
    }

    #[test]
    fn safe_words_stay_bare() {
        for word in [
            "plain",
            "/etc/hosts",
            "1.28/stable",
            "a=b,c=d",
            "user@host:22",
            "-n",
        ] {
            assert_eq!(quote(word), word);
        }
    }

    #[test]
    fn other_words_are_single_quoted() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("two words"), "'two words'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("'"), r"''\'''");
        assert_eq!(quote("$HOME"), "'$HOME'");
        assert_eq!(quote("~"), "'~'");
        assert_eq!(quote("日本語"), "'日本語'");
    }
}
