//! CNI plugin invocation and pod network namespaces (see issue 5).
