//! Docker's made-up container names (`adjective_surname`, its `namesgenerator`): a short list
//! of each here, which is enough since a name in use is retried with a digit appended.

/// How many times a made-up name is retried when another container has it.
pub const RETRIES: u32 = 10;

const LEFT: [&str; 24] = [
    "admiring",
    "affectionate",
    "agitated",
    "amazing",
    "angry",
    "awesome",
    "blissful",
    "bold",
    "brave",
    "charming",
    "clever",
    "cool",
    "dazzling",
    "eager",
    "elastic",
    "festive",
    "focused",
    "gallant",
    "happy",
    "jolly",
    "keen",
    "modest",
    "quirky",
    "vibrant",
];

const RIGHT: [&str; 24] = [
    "albattani",
    "babbage",
    "bell",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euler",
    "fermat",
    "feynman",
    "galileo",
    "hopper",
    "hypatia",
    "kepler",
    "lovelace",
    "mccarthy",
    "newton",
    "noether",
    "pasteur",
    "ritchie",
    "shannon",
    "tesla",
    "turing",
    "wozniak",
];

/// A random `adjective_surname`; after the first try (`retry` > 0) a random digit is appended,
/// as docker's `GetRandomName(retry)` does.
pub fn random_name(retry: u32) -> String {
    let left = LEFT[random_below(LEFT.len())];
    let right = RIGHT[random_below(RIGHT.len())];
    let mut name = format!("{left}_{right}");
    if retry > 0 {
        name.push(char::from(b'0' + random_below(10) as u8));
    }
    name
}

/// A random number below `n` (not cryptographic: names only need to differ).
fn random_below(n: usize) -> usize {
    let mut bytes = [0u8; 8];
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        // No randomness: the clock's nanoseconds still spread names out.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        bytes[..4].copy_from_slice(&nanos.to_ne_bytes());
    }
    (u64::from_ne_bytes(bytes) % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_container_names() {
        for retry in 0..3 {
            let name = random_name(retry);
            assert!(crate::store::valid_container_name(&name), "{name}");
            assert!(name.contains('_'), "{name}");
            assert_eq!(
                name.chars().last().is_some_and(|c| c.is_ascii_digit()),
                retry > 0
            );
        }
    }
}
