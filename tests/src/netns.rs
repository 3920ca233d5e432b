//! Network namespaces with veth pairs for fault injection; torn down on drop.
