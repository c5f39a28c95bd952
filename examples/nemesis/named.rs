//! The campaigns' "no failure without evidence" rule: a walk may fail only
//! as "its node was lost while running it alone", naming only nodes the
//! nemesis hit (`check.rs` here, and `tests/ssh_nemesis.rs`, which
//! includes this file with `#[path]`).

/// Whether `error` is a node loss whose every `NAME (pid P)` is one the
/// nemesis hit (`hit(NAME, P)`); else why not.
pub fn evidence(error: &str, hit: impl Fn(&str, u32) -> bool) -> Result<(), String> {
    if !error.starts_with("its node was lost while running it alone") {
        return Err("not a node loss".to_string());
    }
    let named = named_pids(error);
    if named.is_empty() {
        return Err("it names no node".to_string());
    }
    for (name, pid) in named {
        if !hit(&name, pid) {
            return Err(format!("the nemesis never killed or stopped {name} (pid {pid})"));
        }
    }
    Ok(())
}

/// Every `NAME (pid P)` in `text`.
fn named_pids(text: &str) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices(" (pid ") {
        let name = text[..at].rsplit([' ', ':', ';']).next().unwrap_or("");
        let digits: String = text[at + 6..].chars().take_while(char::is_ascii_digit).collect();
        if let Ok(pid) = digits.parse() {
            found.push((name.to_string(), pid));
        }
    }
    found
}
