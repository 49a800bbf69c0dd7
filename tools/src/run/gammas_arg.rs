//! The `--gammas` / `--head-offset` flags, resolved against the input's head count.

use retention_core::Gammas;

use crate::error::CliError;

/// What `--gammas` asked for, before H is known.
#[derive(Debug, Clone, PartialEq)]
pub enum GammasArg {
    /// The RetNet schedule on global head indices `offset..offset + H`.
    Retnet {
        /// `--head-offset`, 0 when absent.
        offset: usize,
    },
    /// An explicit per-head list (validated in (0, 1) when resolved).
    List(Vec<f64>),
}

impl GammasArg {
    /// Parse `retnet` or `g1,g2,…`. A head offset only makes sense for the RetNet schedule.
    ///
    /// # Errors
    /// [`CliError::BadFlag`] for a value that is not a number, or an offset with a list.
    pub fn parse(text: &str, head_offset: Option<usize>) -> Result<Self, CliError> {
        if text.trim().eq_ignore_ascii_case("retnet") {
            return Ok(Self::Retnet {
                offset: head_offset.unwrap_or(0),
            });
        }
        if head_offset.is_some() {
            return Err(CliError::BadFlag(
                "--head-offset applies only to --gammas retnet; an explicit list already names every head's decay".into(),
            ));
        }
        text.split(',')
            .enumerate()
            .map(|(i, g)| {
                g.trim().parse::<f64>().map_err(|_| {
                    CliError::BadFlag(format!(
                        "invalid --gammas entry {i} `{}`: expected `retnet` or a comma-separated list of numbers in (0, 1)",
                        g.trim()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::List)
    }

    /// The decays of a problem with `heads` heads.
    ///
    /// # Errors
    /// [`CliError::Retention`]: a γ outside (0, 1) (including RetNet heads so far past the
    /// offset that γ rounds to 1), or a list whose length is not `heads`.
    pub fn resolve(&self, heads: usize) -> Result<Gammas, CliError> {
        let gammas = match self {
            Self::Retnet { offset } => Gammas::retnet_sharded(heads, *offset)?,
            Self::List(values) => Gammas::from_list(values.clone())?,
        };
        gammas.check_heads(heads)?;
        Ok(gammas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_retnet_and_lists() {
        assert_eq!(
            GammasArg::parse("RetNet", Some(3)).unwrap(),
            GammasArg::Retnet { offset: 3 }
        );
        assert_eq!(
            GammasArg::parse("0.5, 0.25", None).unwrap(),
            GammasArg::List(vec![0.5, 0.25])
        );
        assert!(GammasArg::parse("0.5,x", None).is_err());
        assert!(GammasArg::parse("0.5,,0.2", None).is_err());
        assert!(GammasArg::parse("0.5", Some(1)).is_err());
    }

    #[test]
    fn resolves_against_heads() {
        let sharded = GammasArg::Retnet { offset: 2 }.resolve(2).unwrap();
        assert_eq!(
            sharded.as_slice(),
            Gammas::retnet_sharded(2, 2).unwrap().as_slice()
        );
        assert!(GammasArg::List(vec![0.5, 0.25]).resolve(3).is_err());
        assert!(GammasArg::List(vec![0.5, 1.0]).resolve(2).is_err());
        assert!(GammasArg::Retnet { offset: 60 }.resolve(1).is_err());
    }
}
