/*!
The token usage a provider reports, read from its answer as it streams by,
for the audit line: Anthropic's `input_tokens`/`output_tokens` (in the
answer, or in `message_start` and `message_delta` events), OpenAI's
`prompt_tokens`/`completion_tokens` (chat) and `input_tokens`/
`output_tokens` (Responses), Gemini's `promptTokenCount`/
`candidatesTokenCount`. Only numbers after those keys are read; nothing
else of the body is kept, and a key split across two reads is found.
*/
#![forbid(unsafe_code)]

const INPUT: [&str; 3] = ["\"input_tokens\"", "\"prompt_tokens\"", "\"promptTokenCount\""];
const OUTPUT: [&str; 3] = ["\"output_tokens\"", "\"completion_tokens\"", "\"candidatesTokenCount\""];
/// Bytes kept from the end of one read for the next (a key and its value
/// split across reads).
const CARRY: usize = 48;

/// The usage seen so far.
#[derive(Default)]
pub struct Usage {
    pub input: Option<u64>,
    pub output: Option<u64>,
    carry: Vec<u8>,
}

impl Usage {
    /// Reads the numbers in the next piece of the answer.
    pub fn feed(&mut self, data: &[u8]) {
        let mut text = std::mem::take(&mut self.carry);
        text.extend_from_slice(data);
        for (keys, slot) in [(&INPUT, 0), (&OUTPUT, 1)] {
            for key in keys {
                for value in values_after(&text, key.as_bytes()) {
                    // the largest seen: streams report a running or a final count
                    let target = if slot == 0 { &mut self.input } else { &mut self.output };
                    *target = Some(target.map_or(value, |v: u64| v.max(value)));
                }
            }
        }
        let keep = text.len().min(CARRY);
        self.carry = text[text.len() - keep..].to_vec();
        // A key cut by the carry's start would be read twice: harmless, as
        // the largest value is kept.
    }

    /// `in=N out=M` for the audit line (`-` where not reported).
    pub fn describe(&self) -> String {
        let show = |v: Option<u64>| v.map_or("-".to_owned(), |n| n.to_string());
        format!("usage_in={} usage_out={}", show(self.input), show(self.output))
    }
}

/// The whole numbers that follow `"key"` `:` in `text` (a number cut by the
/// end of `text` is skipped: the carry brings it back whole).
fn values_after(text: &[u8], key: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = find(&text[i..], key) {
        let mut j = i + pos + key.len();
        while j < text.len() && matches!(text[j], b' ' | b'\t' | b'\r' | b'\n') {
            j += 1;
        }
        if j < text.len() && text[j] == b':' {
            j += 1;
            while j < text.len() && matches!(text[j], b' ' | b'\t' | b'\r' | b'\n') {
                j += 1;
            }
            let start = j;
            while j < text.len() && text[j].is_ascii_digit() && j - start < 15 {
                j += 1;
            }
            if j > start && j < text.len() {
                if let Ok(n) = std::str::from_utf8(&text[start..j]).unwrap_or("x").parse() {
                    out.push(n);
                }
            }
        }
        i += pos + key.len();
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_whole_answers_and_streams_split_anywhere() {
        let mut u = Usage::default();
        u.feed(br#"{"id":"x","usage":{"input_tokens": 12,"output_tokens":34}}"#);
        assert_eq!((u.input, u.output), (Some(12), Some(34)));
        // Anthropic events, split in the middle of a key and of a number
        let stream = "event: message_start\ndata: {\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
             event: message_delta\ndata: {\"usage\":{\"output_tokens\":157}}\n\n";
        for cut in [10, 60, 75, 140] {
            let mut u = Usage::default();
            u.feed(&stream.as_bytes()[..cut]);
            u.feed(&stream.as_bytes()[cut..]);
            u.feed(b"\n");
            assert_eq!((u.input, u.output), (Some(25), Some(157)), "cut at {cut}");
        }
        let mut u = Usage::default();
        u.feed(br#"data: {"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":9}}"#);
        u.feed(b"\n");
        assert_eq!(u.describe(), "usage_in=7 usage_out=9");
        assert_eq!(Usage::default().describe(), "usage_in=- usage_out=-");
    }
}
