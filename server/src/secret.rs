//! The secrets the server hands out (resume tokens, which take over a player, and author
//! tokens, which sign as a whiteboard author): 128 bits from the operating system's secure
//! random source. There is no fallback: a server that cannot get unguessable bytes refuses to
//! start, and refuses the join that needed one, rather than mint guessable tokens.

/// The operating system could not give random bytes.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's secure random source failed: {0}")]
pub struct RandomSourceFailed(getrandom::Error);

/// 128 unguessable bits.
pub fn token() -> Result<[u8; 16], RandomSourceFailed> {
    let mut token = [0u8; 16];
    getrandom::fill(&mut token).map_err(RandomSourceFailed)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn tokens_are_all_different_and_use_every_bit() {
        let tokens: Vec<[u8; 16]> = (0..1000).map(|_| token().unwrap()).collect();
        assert_eq!(tokens.iter().collect::<HashSet<_>>().len(), 1000);
        let ones: u32 = tokens.iter().flatten().map(|byte| byte.count_ones()).sum();
        // 128,000 fair bits: 64,000 ones give or take a few hundred; a stuck or biased source
        // lands far outside.
        assert!((62_000..66_000).contains(&ones), "{ones} ones in 128,000 bits");
    }
}
