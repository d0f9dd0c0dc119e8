//! What requests cost, by provider: the choices that only change the bill,
//! never what a reader sees, follow the price list of the provider in use.
//!
//! The one choice made on it today is how to copy a small object. A
//! server-side copy (CopyObject) moves no bytes through the machine, but
//! B2 bills it as a class C transaction, ten times a GET; a GET and a PUT
//! (class A, free) cost less there until the download of the object costs
//! more than the difference. AWS bills a copy as a PUT, so a GET and a PUT
//! never cost less than the copy. Prices from FACTS.md (Backblaze's
//! "B2 transactions price" page, AWS S3 Standard), per request and per
//! byte, without the daily free allowances.

use clap::ValueEnum;

/// A provider's price list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PriceList {
    /// AWS S3 Standard: PUT, COPY and LIST $0.005 per 1,000, GET and HEAD
    /// $0.0004 per 1,000, transfer within a region free.
    Aws,
    /// Backblaze B2: uploads and deletes free, GET and HEAD $0.004 per
    /// 10,000, listings and copies $0.004 per 1,000, downloads $0.01 per GB.
    B2,
}

/// Prices in billionths of a cent, so that all are whole numbers.
struct Prices {
    get: u64,
    put: u64,
    copy: u64,
    /// Per downloaded byte.
    download_byte: u64,
}

impl PriceList {
    fn prices(self) -> Prices {
        match self {
            // $0.0004 / 1,000 = 4e-5 cent; $0.005 / 1,000 = 5e-4 cent.
            PriceList::Aws => Prices {
                get: 40_000,
                put: 500_000,
                copy: 500_000,
                download_byte: 0,
            },
            // $0.004 / 10,000 = 4e-5 cent; $0.004 / 1,000 = 4e-4 cent;
            // $0.01 per 10^9 bytes = 1e-9 cent a byte.
            PriceList::B2 => Prices {
                get: 40_000,
                put: 0,
                copy: 400_000,
                download_byte: 1,
            },
        }
    }

    /// The price list of an endpoint: B2's for a B2 endpoint, else AWS's.
    pub fn for_endpoint(b2: bool) -> Self {
        if b2 {
            PriceList::B2
        } else {
            PriceList::Aws
        }
    }

    /// Objects up to this many bytes cost less to GET and PUT again than
    /// to copy server-side (0: never).
    pub fn reupload_up_to(self) -> u64 {
        let p = self.prices();
        let request_saving = p.copy.saturating_sub(p.get + p.put);
        if request_saving == 0 {
            return 0;
        }
        match p.download_byte {
            0 => u64::MAX,
            per_byte => request_saving / per_byte,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_objects_are_uploaded_again_on_b2_and_copied_on_aws() {
        // A copy costs what 9 GETs save, worth 360 KB of download.
        assert_eq!(PriceList::B2.reupload_up_to(), 360_000);
        assert_eq!(PriceList::Aws.reupload_up_to(), 0);
        assert_eq!(PriceList::for_endpoint(true), PriceList::B2);
        assert_eq!(PriceList::for_endpoint(false), PriceList::Aws);
    }
}
