//! Bucket operations: HeadBucket, GetBucketVersioning, and the few a test
//! harness or an admin command needs (CreateBucket, PutBucketVersioning,
//! DeleteBucket). The filesystem itself never creates or deletes buckets.

use bytes::Bytes;
use reqwest::Method;

use super::client::{Request, S3Client};
use super::error::S3Error;
use super::types::VersioningStatus;
use super::xml;

impl S3Client {
    /// HeadBucket: does the bucket exist and may we use it? A HEAD has no
    /// error body, so for a clearer reason on failure prefer a one-key
    /// `list_objects`.
    pub async fn head_bucket(&self) -> Result<(), S3Error> {
        self.send(&Request::new("HeadBucket", Method::HEAD, None))
            .await?;
        Ok(())
    }

    pub async fn get_bucket_versioning(&self) -> Result<VersioningStatus, S3Error> {
        let req = Request::new("GetBucketVersioning", Method::GET, None).query("versioning", "");
        let (_, _, body) = self.send(&req).await?;
        req.parse(&body, xml::parse_versioning)
    }

    pub async fn put_bucket_versioning(&self, enabled: bool) -> Result<(), S3Error> {
        let req = Request::new("PutBucketVersioning", Method::PUT, None)
            .query("versioning", "")
            .body_with_md5(Bytes::from(xml::versioning_body(enabled)));
        self.send(&req).await?;
        Ok(())
    }

    /// CreateBucket in the endpoint's region.
    pub async fn create_bucket(&self) -> Result<(), S3Error> {
        let mut req = Request::new("CreateBucket", Method::PUT, None);
        if let Some(body) = xml::create_bucket_body(&self.endpoint().region) {
            req = req.body_with_md5(Bytes::from(body));
        }
        self.send(&req).await?;
        Ok(())
    }

    pub async fn delete_bucket(&self) -> Result<(), S3Error> {
        self.send(&Request::new("DeleteBucket", Method::DELETE, None))
            .await?;
        Ok(())
    }
}
