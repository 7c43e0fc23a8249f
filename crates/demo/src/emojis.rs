//! The emojis on the page, in page order, and the one fact the story turns on: the emoji team
//! retired the old HTTP/1 `FindByShortcode` endpoint for the bottom half of the list.

/// One emoji: its shortcode (`:bacon:`) and the character.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmojiInfo {
    /// The shortcode, colons included: `:bacon:`.
    pub shortcode: &'static str,
    /// The emoji itself.
    pub unicode: &'static str,
}

/// Every emoji, top of the page first.
pub const ALL: &[EmojiInfo] = &[
    e(":joy:", "😂"),
    e(":sunglasses:", "😎"),
    e(":heart_eyes:", "😍"),
    e(":smiley:", "😃"),
    e(":relaxed:", "☺️"),
    e(":rocket:", "🚀"),
    e(":tada:", "🎉"),
    e(":thumbsup:", "👍"),
    e(":sun_with_face:", "🌞"),
    e(":unicorn:", "🦄"),
    e(":bacon:", "🥓"),
    e(":doughnut:", "🍩"),
    e(":pizza:", "🍕"),
    e(":taco:", "🌮"),
    e(":champagne:", "🍾"),
    e(":ghost:", "👻"),
    e(":see_no_evil:", "🙈"),
    e(":money_mouth_face:", "🤑"),
    e(":stuck_out_tongue_winking_eye:", "😜"),
    e(":crossed_fingers:", "🤞"),
];

const fn e(shortcode: &'static str, unicode: &'static str) -> EmojiInfo {
    EmojiInfo { shortcode, unicode }
}

/// Finds an emoji by shortcode.
pub fn find(shortcode: &str) -> Option<(usize, &'static EmojiInfo)> {
    ALL.iter()
        .enumerate()
        .find(|(_, e)| e.shortcode == shortcode)
}

/// Whether the old HTTP/1 endpoint still answers for `shortcode`: only for the top half.
pub fn old_endpoint_serves(shortcode: &str) -> bool {
    matches!(find(shortcode), Some((i, _)) if i < ALL.len() / 2)
}

/// The voting method for an emoji, as in Linkerd's emojivoto: `:bacon:` → `VoteBacon`,
/// `:money_mouth_face:` → `VoteMoneyMouthFace`. One method per emoji makes a tap show which
/// emoji a failing call was for.
pub fn vote_method(shortcode: &str) -> String {
    let mut out = String::from("Vote");
    for word in shortcode.trim_matches(':').split('_') {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// The emoji a voting method is for (the inverse of [`vote_method`]).
pub fn by_vote_method(method: &str) -> Option<&'static EmojiInfo> {
    ALL.iter().find(|e| vote_method(e.shortcode) == method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_camel_case_and_unique() {
        assert_eq!(vote_method(":bacon:"), "VoteBacon");
        assert_eq!(vote_method(":money_mouth_face:"), "VoteMoneyMouthFace");
        for e in ALL {
            assert_eq!(by_vote_method(&vote_method(e.shortcode)), Some(e));
        }
    }

    #[test]
    fn the_bottom_half_is_retired() {
        assert!(old_endpoint_serves(":joy:"));
        assert!(old_endpoint_serves(":unicorn:"));
        assert!(!old_endpoint_serves(":bacon:"));
        assert!(!old_endpoint_serves(":crossed_fingers:"));
        assert!(!old_endpoint_serves(":nope:"));
        let served = ALL
            .iter()
            .filter(|e| old_endpoint_serves(e.shortcode))
            .count();
        assert_eq!(served * 2, ALL.len());
    }
}
