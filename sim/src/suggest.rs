//! "Did you mean" for names a person typed: the closest known name, if it is close enough.

/// The candidate closest to `word` by edit distance, if within a third of `word`'s length
/// (at least 1, at most 3 edits).
pub(crate) fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `". Did you mean `x`?"`, or nothing.
pub(crate) fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(word, candidates).map_or_else(String::new, |c| format!(". Did you mean `{c}`?"))
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_name_within_reach() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        let names = ["duration_s", "warmup_s", "workers"];
        assert_eq!(did_you_mean("duraton_s", names), Some("duration_s"));
        assert_eq!(did_you_mean("worker", names), Some("workers"));
        assert_eq!(did_you_mean("bogus", names), None);
        assert_eq!(hint("latncy", ["latency"]), ". Did you mean `latency`?");
        assert_eq!(hint("zzz", ["latency"]), "");
    }
}
